//! FlameScope-style subsecond heatmap: one self-contained HTML page (no
//! file or script loaded from elsewhere) with a column per second of the
//! profile and a row per 20 ms offset within it, shaded by samples, and the
//! flame graph of any range of cells selected on it. The counts come from
//! the kernel already summed per (time slot, stack): `Sample::time_slot`.

use std::collections::HashMap;

use anyhow::{Context, Result};
use serde_json::json;

use crate::model::profile::Profile;
use crate::output::folded::{self, FoldOptions};

/// Rows per column: 50 offsets of 20 ms within each second.
pub const ROWS_PER_SECOND: u32 = 50;
/// The time slot the kernel counts samples in, in nanoseconds.
pub const SLOT_NS: u64 = 1_000_000_000 / ROWS_PER_SECOND as u64;

const TEMPLATE: &str = include_str!("heatmap.html");

/// Renders the page; `title` and `subtitle` say what was measured.
pub fn render(
    profile: &Profile,
    fold_options: FoldOptions,
    title: &str,
    subtitle: &str,
) -> Result<Vec<u8>> {
    let mut stack_index: HashMap<String, usize> = HashMap::new();
    let mut stacks: Vec<String> = Vec::new();
    let mut cells: HashMap<(u32, usize), u64> = HashMap::new();
    for sample in &profile.samples {
        let stack = folded::fold_sample(sample, fold_options);
        let index = *stack_index.entry(stack).or_insert_with_key(|stack| {
            stacks.push(stack.clone());
            stacks.len() - 1
        });
        *cells.entry((sample.time_slot, index)).or_default() += sample.value;
    }
    let mut cells: Vec<(u32, usize, u64)> = cells
        .into_iter()
        .map(|((slot, index), count)| (slot, index, count))
        .collect();
    cells.sort_unstable();
    let last_slot = cells.iter().map(|cell| cell.0).max().unwrap_or(0);
    let seconds =
        (profile.duration.as_secs_f64().ceil() as u32).max(last_slot / ROWS_PER_SECOND + 1);
    let data = json!({
        "title": title,
        "subtitle": subtitle,
        "slotMs": SLOT_NS / 1_000_000,
        "rows": ROWS_PER_SECOND,
        "columns": seconds,
        "stacks": stacks,
        "cells": cells,
    });
    let data = serde_json::to_string(&data).context("encoding the heatmap data")?;
    Ok(TEMPLATE
        .replace("{{DATA}}", &json_inside_script(&data))
        .into_bytes())
}

/// JSON that cannot end or change the `<script>` element it sits in: a
/// name's `</script>` would end it and its `<!--` would swallow the page's
/// own scripts. `<`, `>` and `&` only occur inside JSON strings, where
/// their `\u` escapes mean the same.
fn json_inside_script(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::profile::FrameKind;
    use crate::output::folded::tests::{frame, profile, sample};

    #[test]
    fn cells_count_samples_per_slot_and_stack_and_names_cannot_end_the_script() {
        let mut early = sample(
            "burn",
            vec![frame(FrameKind::User, &["a</script><!--<script>&"])],
            vec![],
            3,
        );
        early.time_slot = 2;
        let mut late = early.clone();
        late.time_slot = 120;
        late.value = 4;
        let page = String::from_utf8(
            render(
                &profile(vec![early, late]),
                FoldOptions::default(),
                "t",
                "s",
            )
            .unwrap(),
        )
        .unwrap();
        assert!(page.contains(r#""cells":[[2,0,3],[120,0,4]]"#), "{page}");
        assert!(page.contains(r#""columns":3"#));
        assert!(page.contains(r"a\u003c/script\u003e\u003c!--\u003cscript\u003e\u0026"));
        assert!(!page.contains("a</script>") && !page.contains("<!--"));
        // Nothing is loaded from elsewhere.
        assert!(!page.contains(" src=") && !page.contains("<link") && !page.contains("import "));
    }
}
