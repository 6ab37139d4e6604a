//! `profile -o x.html`: the subsecond heatmap page, tested in headless
//! Chromium against a workload with known phases (every second, 300 ms on
//! two CPUs in phase_one, then 700 ms on one CPU in phase_two). The heatmap
//! must show the busier band at the same offset in every second, and
//! clicking the first and last cell of a range inside it must render a
//! flame graph of that range alone. A screenshot is kept in
//! target/test-artifacts/.

mod common;

use common::browser::Browser;
use common::*;
use serde_json::Value;

const ROWS: usize = 50;
/// Rows of the 300 ms phase (20 ms each).
const BAND: usize = 15;

/// Samples of each row (offset within the second) of one column.
fn column_rows(cells: &[(usize, u64)], column: usize) -> Vec<u64> {
    let mut rows = vec![0; ROWS];
    for &(slot, count) in cells {
        if slot / ROWS == column {
            rows[slot % ROWS] += count;
        }
    }
    rows
}

/// The first row of the BAND consecutive rows (wrapping) with the most
/// samples, and the ratio of their mean to the other rows' mean.
fn busiest_band(rows: &[u64]) -> (usize, f64) {
    let sum_from = |first: usize| (0..BAND).map(|i| rows[(first + i) % ROWS]).sum::<u64>();
    let first = (0..ROWS).max_by_key(|&first| sum_from(first)).unwrap();
    let band = sum_from(first) as f64 / BAND as f64;
    let rest = (rows.iter().sum::<u64>() - sum_from(first)) as f64 / (ROWS - BAND) as f64;
    (first, band / rest.max(1.0))
}

#[test]
fn heatmap_shows_the_phases_and_a_selected_range_renders_its_own_flame_graph() {
    let _serial = serial();
    let page = tmp_dir().join("phases-heatmap.html");
    let output = run(bpfscope()
        .args(["profile", "-F", "999", "-o"])
        .arg(&page)
        .arg("--")
        .arg(workload("phases"))
        .arg("6"));
    assert!(output.status.success(), "{}", stderr(&output));

    let mut browser = Browser::open(&format!("file://{}", page.display()), "phases-heatmap.html");
    let mut cells = Value::Null;
    wait_for(std::time::Duration::from_secs(20), || {
        cells = browser.devtools.evaluate(
            "[...document.querySelectorAll('#heatmap rect.cell')].map(r => [Number(r.dataset.slot), Number(r.dataset.count)])",
        );
        cells.as_array().is_some_and(|cells| !cells.is_empty())
    });
    let cells: Vec<(usize, u64)> = cells
        .as_array()
        .expect("the page drew no heatmap cells")
        .iter()
        .map(|cell| {
            (
                cell[0].as_u64().unwrap() as usize,
                cell[1].as_u64().unwrap(),
            )
        })
        .collect();

    // Whole seconds 1 to 4: the busier band sits at the same offset in each.
    let (first_row, _) = busiest_band(&column_rows(&cells, 1));
    for column in 1..=4 {
        let (first, ratio) = busiest_band(&column_rows(&cells, column));
        let drift = (first + ROWS - first_row) % ROWS;
        assert!(
            ratio >= 1.5 && (drift <= 1 || drift >= ROWS - 1),
            "second {column}: busiest 300 ms at row {first} (second 1: {first_row}), {ratio:.2}x the rest: {:?}",
            column_rows(&cells, column)
        );
    }

    // Click the first and last cell of the band's middle in second 2.
    let first_slot = 2 * ROWS + first_row + 3;
    let last_slot = first_slot + BAND - 7;
    for slot in [first_slot, last_slot] {
        let at = browser.devtools.evaluate(&format!(
            "(() => {{ const r = document.querySelector('#heatmap rect[data-slot=\"{slot}\"]').getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }})()"
        ));
        browser.click(at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
    }
    let mut shown = Value::Null;
    let selected = wait_for(std::time::Duration::from_secs(10), || {
        shown = browser.devtools.evaluate(
            "(() => { const s = document.getElementById('selection').dataset; \
             const named = n => [...document.querySelectorAll('#flamegraph g.frame')] \
               .filter(g => g.dataset.name === n).reduce((a, g) => a + Number(g.dataset.samples), 0); \
             return [Number(s.first), Number(s.last), Number(s.samples), named('phase_one'), named('phase_two')]; })()",
        );
        shown[0].as_u64() == Some(first_slot as u64) && shown[1].as_u64() == Some(last_slot as u64)
    });
    assert!(
        selected,
        "clicking slots {first_slot} and {last_slot} selected {shown}"
    );
    let (samples, one, two) = (
        shown[2].as_f64().unwrap(),
        shown[3].as_f64().unwrap(),
        shown[4].as_f64().unwrap(),
    );
    assert!(
        samples >= 100.0,
        "only {samples} samples in the selected range"
    );
    assert!(
        one >= 0.9 * samples,
        "phase_one holds {one} of {samples} selected samples (phase_two {two})"
    );
    browser.screenshot("heatmap-selected.png");
}
