//! Renders a `DiffProfile`: difffolded.pl's three-column text (`stack
//! before after`), or a differential flame graph drawn by inferno from it
//! (frames sized by the after profile, red where a stack grew, blue where
//! it shrank; `negate` swaps the roles, as flamegraph.pl's --negate does).

use anyhow::{Context, Result};
use inferno::flamegraph::{self, Options};

use crate::model::diff::DiffProfile;

/// `stack before after` lines, sorted by stack.
pub fn render_folded(diff: &DiffProfile) -> String {
    diff.stacks
        .iter()
        .map(|(stack, (before, after))| format!("{stack} {before} {after}\n"))
        .collect()
}

/// The differential flame graph; `subtitle` says what was compared.
pub fn render_svg(diff: &DiffProfile, negate: bool, subtitle: &str) -> Result<Vec<u8>> {
    let lines = render_folded(diff);
    let mut options = Options::default();
    options.title = "Differential Flame Graph".to_string();
    options.subtitle = Some(subtitle.to_string());
    options.negate_differentials = negate;
    if lines.is_empty() {
        anyhow::bail!("both profiles are empty: nothing to draw");
    }
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, lines.lines(), &mut svg)
        .context("rendering the differential flame graph")?;
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn writes_difffolded_lines_with_zeros_for_missing_sides() {
        let before = BTreeMap::from([("a;b".to_string(), 3), ("a;c".to_string(), 1)]);
        let after = BTreeMap::from([("a;b".to_string(), 1), ("a;d".to_string(), 2)]);
        assert_eq!(
            render_folded(&DiffProfile::new(&before, &after)),
            "a;b 3 1\na;c 1 0\na;d 0 2\n"
        );
    }
}
