//! Interactive flame-graph SVG, drawn by inferno from folded stacks.

use anyhow::{Context, Result};
use inferno::flamegraph::color::{BasicPalette, Palette};
use inferno::flamegraph::{self, Options};

use crate::model::profile::{Profile, ProfileKind};
use crate::output::folded::{self, FoldOptions};

/// Renders the profile as an SVG; `subtitle` says what was measured and how.
pub fn render(profile: &Profile, fold_options: FoldOptions, subtitle: &str) -> Result<Vec<u8>> {
    let folded = folded::render(profile, fold_options);
    let mut options = Options::default();
    match profile.kind {
        ProfileKind::Cpu { .. } => {
            options.title = "CPU Flame Graph".to_string();
            options.count_name = "samples".to_string();
            options.colors = Palette::Basic(BasicPalette::Hot);
        }
        ProfileKind::OffCpu => {
            options.title = "Off-CPU Time Flame Graph".to_string();
            options.count_name = "us".to_string();
            options.colors = Palette::Basic(BasicPalette::Io);
        }
    }
    options.subtitle = Some(subtitle.to_string());
    let mut svg = Vec::new();
    if folded.is_empty() {
        // inferno refuses empty input; an empty graph still says what was run.
        options.title = format!("{} (no samples)", options.title);
        flamegraph::from_lines(&mut options, ["no-samples 0"], &mut svg)
    } else {
        flamegraph::from_lines(&mut options, folded.lines(), &mut svg)
    }
    .context("rendering the flame graph")?;
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::profile::FrameKind;
    use crate::output::folded::tests::{frame, profile, sample};

    #[test]
    fn svg_names_functions_and_counts() {
        let p = profile(vec![sample(
            "burn",
            vec![
                frame(FrameKind::User, &["main"]),
                frame(FrameKind::User, &["hot_function"]),
            ],
            vec![],
            7,
        )]);
        let svg = String::from_utf8(render(&p, FoldOptions::default(), "subtitle here").unwrap())
            .unwrap();
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains("hot_function"));
        assert!(svg.contains("CPU Flame Graph"));
        assert!(svg.contains("subtitle here"));
        assert!(svg.contains("7 samples"));
    }

    #[test]
    fn empty_profile_still_renders() {
        let svg = render(&profile(vec![]), FoldOptions::default(), "s").unwrap();
        assert!(String::from_utf8(svg).unwrap().contains("no samples"));
    }
}
