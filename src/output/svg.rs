//! Interactive flame-graph SVG, drawn by inferno from folded stacks.

use anyhow::{Context, Result};
use inferno::flamegraph::color::{BasicPalette, MultiPalette, Palette};
use inferno::flamegraph::{self, Options};

use crate::model::profile::{FrameKind, Profile, ProfileKind};
use crate::output::folded::{self, FoldOptions};

/// Renders the profile as an SVG; `subtitle` says what was measured and how.
/// JIT frames (annotated `_[j]`) are drawn green, kernel frames orange,
/// as flamegraph.pl's `java` palette draws them.
pub fn render(profile: &Profile, fold_options: FoldOptions, subtitle: &str) -> Result<Vec<u8>> {
    let has_jit = profile
        .samples
        .iter()
        .any(|sample| sample.user.iter().any(|frame| frame.kind == FrameKind::Jit));
    let fold_options = FoldOptions {
        annotate_jit: has_jit,
        ..fold_options
    };
    let folded = folded::render(profile, fold_options);
    let mut options = Options::default();
    match profile.kind {
        ProfileKind::Cpu { .. } => {
            options.title = "CPU Flame Graph".to_string();
            options.count_name = "samples".to_string();
            options.colors = if has_jit {
                Palette::Multi(MultiPalette::Java)
            } else {
                Palette::Basic(BasicPalette::Hot)
            };
        }
        ProfileKind::OffCpu => {
            options.title = "Off-CPU Time Flame Graph".to_string();
            options.count_name = "us".to_string();
            options.colors = Palette::Basic(BasicPalette::Io);
        }
    }
    options.subtitle = Some(subtitle.to_string());
    if folded.is_empty() {
        // inferno refuses empty input; say plainly that nothing was sampled.
        return Ok(empty_svg(&options.title, subtitle).into_bytes());
    }
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, folded.lines(), &mut svg)
        .context("rendering the flame graph")?;
    Ok(svg)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn empty_svg(title: &str, subtitle: &str) -> String {
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg version=\"1.1\" width=\"1200\" height=\"120\" \
         xmlns=\"http://www.w3.org/2000/svg\"><text x=\"600\" y=\"40\" text-anchor=\"middle\" font-size=\"17\">{}</text>\
         <text x=\"600\" y=\"70\" text-anchor=\"middle\" font-size=\"12\">{}</text>\
         <text x=\"600\" y=\"100\" text-anchor=\"middle\" font-size=\"14\">no samples were collected</text></svg>\n",
        escape(title),
        escape(subtitle)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let svg =
            String::from_utf8(render(&profile(vec![]), FoldOptions::default(), "a <b>").unwrap())
                .unwrap();
        assert!(svg.starts_with("<?xml") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("no samples were collected") && svg.contains("a &lt;b&gt;"));
    }
}
