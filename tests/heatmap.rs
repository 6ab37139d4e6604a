//! `profile -o x.html`: the subsecond heatmap page, tested in headless
//! Chromium against a workload with known phases (every second, 300 ms on
//! two CPUs in phase_one, then 700 ms on one CPU in phase_two). The heatmap
//! must show the busier band at the same offset in every second, and
//! clicking the first and last cell of a range inside it must render a
//! flame graph of that range alone. A screenshot is kept in
//! target/test-artifacts/. serve keeps the same slots for its last minutes:
//! its `/heatmap.html` shows the phases too, and `diff_base` compares the
//! last seconds with earlier ones.

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

/// The heatmap data a page embeds: (slot, samples) per cell, summed over
/// the stacks that contain `function`.
fn page_cells(page: &str, function: &str) -> Vec<(usize, u64)> {
    let start = page
        .find("application/json\">")
        .expect("no data in the page")
        + 18;
    let end = start + page[start..].find("</script>").unwrap();
    let data: Value = serde_json::from_str(&page[start..end]).unwrap();
    let stacks = data["stacks"].as_array().unwrap();
    let mut cells = std::collections::HashMap::new();
    for cell in data["cells"].as_array().unwrap() {
        let stack = stacks[cell[1].as_u64().unwrap() as usize].as_str().unwrap();
        if stack.split(';').any(|frame| frame == function) {
            *cells.entry(cell[0].as_u64().unwrap() as usize).or_insert(0) +=
                cell[2].as_u64().unwrap();
        }
    }
    cells.into_iter().collect()
}

#[test]
fn serve_heatmap_and_diff_base_read_the_agents_cpu_history() {
    let _serial = serial();
    let (serve, port) = start_serve();
    let phases = Workload::start(&workload("phases"), &["8"]);
    std::thread::sleep(std::time::Duration::from_secs(9));
    drop(phases);
    let split = Workload::start(&workload("cpu_split"), &["7"]);
    std::thread::sleep(std::time::Duration::from_secs(6));

    // The 8 s of phases, 6 to 14 s ago, show their busier 300 ms band (the
    // sampler runs at 99 Hz here: rows are summed over the seconds).
    let (status, page) = get(port, "/heatmap.html?seconds=20");
    assert_eq!(status, 200, "{page}");
    let cells = page_cells(&page, "phases");
    // The seconds the phases ran in whole: all but the first and last with samples.
    let mut columns: Vec<usize> = cells.iter().map(|(slot, _)| slot / ROWS).collect();
    columns.sort_unstable();
    columns.dedup();
    assert!(
        columns.len() >= 7,
        "phases seen in only {} seconds: {columns:?}",
        columns.len()
    );
    let mut rows = vec![0; ROWS];
    for &column in &columns[1..columns.len() - 1] {
        for (row, count) in column_rows(&cells, column).into_iter().enumerate() {
            rows[row] += count;
        }
    }
    let (_, ratio) = busiest_band(&rows);
    assert!(
        ratio >= 1.4,
        "no busier 300 ms band in the phases' seconds ({ratio:.2}x): {rows:?}"
    );

    // The last 5 s (cpu_split) against the 5 s that ended 8 s earlier (phases).
    let (status, svg) = get(port, "/flamegraph.svg?seconds=5&diff_base=8");
    assert_eq!(status, 200, "{svg}");
    let title_of = |name: &str| {
        svg.split("<title>")
            .skip(1)
            .map(|t| t.split("</title>").next().unwrap())
            .find(|t| t.starts_with(&format!("{name} (")))
            .map(str::to_string)
    };
    // Differential graphs colour leaves by the change of their own samples:
    // cpu_split's leaf, spin() under burn_three and burn_one, is new.
    assert!(
        title_of("burn_three").is_some(),
        "no burn_three in {svg:.2000}"
    );
    let spin = title_of("spin").unwrap_or_else(|| panic!("no spin in {svg:.2000}"));
    assert!(spin.contains("; +"), "spin did not grow: {spin}");
    assert!(
        title_of("phase_two").is_none(),
        "phase_two drawn in the last 5 s"
    );
    let (status, message) = get(port, "/flamegraph.svg?diff_base=290");
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("history"), "{message}");
    drop(split);
    drop(serve);
}

#[test]
fn hostile_names_cannot_blank_the_heatmap_page() {
    let _serial = serial();
    // The names' owner is an unprivileged user running their own program.
    let (uid, gid) = system_user("bpfscope-hostile");
    let dir = std::path::PathBuf::from(format!("/tmp/bpfscope-names-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let program = dir.join("hostile_names");
    std::fs::copy(workload("hostile_names"), &program).unwrap();
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    let user = Workload(
        std::process::Command::new("runuser")
            .args(["-u", "bpfscope-hostile", "--"])
            .arg(&program)
            .arg("5")
            .spawn()
            .unwrap(),
    );
    let page = tmp_dir().join("hostile-names-heatmap.html");
    let output = run(bpfscope()
        .args(["profile", "-F", "999", "-o"])
        .arg(&page)
        .arg("3"));
    assert!(output.status.success(), "{}", stderr(&output));
    drop(user);
    std::fs::remove_dir_all(&dir).ok();

    let mut browser = Browser::open(
        &format!("file://{}", page.display()),
        "hostile-names-heatmap.html",
    );
    let mut drawn = Value::Null;
    wait_for(std::time::Duration::from_secs(20), || {
        drawn = browser.devtools.evaluate(
            "(() => { const data = document.getElementById('profile-data'); \
             return [document.querySelectorAll('#heatmap rect.cell').length, data ? JSON.parse(data.textContent) \
               .stacks.filter(s => s.startsWith('<!--<script>;') && s.includes(';</script><!--<script>&amp:')).length : 0]; })()",
        );
        drawn[0].as_u64().is_some_and(|cells| cells > 0)
    });
    assert!(
        drawn[0].as_u64().unwrap_or(0) >= 100,
        "cells drawn: {drawn}"
    );
    assert!(
        drawn[1].as_u64().unwrap_or(0) >= 1,
        "the hostile names are not in the page's data: {drawn}"
    );
    browser.screenshot("heatmap-hostile-names.png");
}
