//! Interactive flame-graph SVG, drawn by inferno from folded stacks.

use anyhow::{Context, Result};
use inferno::flamegraph::color::{BasicPalette, Color, MultiPalette, Palette, PaletteMap};
use inferno::flamegraph::{self, Options};

use crate::model::profile::{FrameKind, Profile, ProfileKind};
use crate::output::folded::{self, FoldOptions};

/// Renders the profile as an SVG; `subtitle` says what was measured and how.
/// JIT frames (annotated `_[j]`) are drawn green, kernel frames orange,
/// as flamegraph.pl's `java` palette draws them. Off-wake and wakeup graphs
/// use its `chain` palette: blocked frames blue, waker frames (`_[w]`) aqua.
pub fn render(profile: &Profile, fold_options: FoldOptions, subtitle: &str) -> Result<Vec<u8>> {
    let has_jit = profile
        .samples
        .iter()
        .any(|sample| sample.user.iter().any(|frame| frame.kind == FrameKind::Jit));
    let chain = matches!(profile.kind, ProfileKind::OffWake | ProfileKind::Wakeup);
    let fold_options = FoldOptions {
        annotate_jit: has_jit,
        annotate_waker: chain,
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
        ProfileKind::OffWake | ProfileKind::Wakeup => {
            options.title = if profile.kind == ProfileKind::OffWake {
                "Off-Wake Time Flame Graph"
            } else {
                "Wakeup Time Flame Graph"
            }
            .to_string();
            options.count_name = "us".to_string();
            options.colors = Palette::Basic(BasicPalette::Io);
        }
    }
    let mut chain_colors = chain.then(|| chain_palette(&folded));
    options.palette_map = chain_colors.as_mut();
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

/// flamegraph.pl's `chain` colours for every frame name in `folded`: waker
/// frames (`_[w]`) aqua, the others blue, each shade from a hash of the name
/// so a function keeps its colour.
fn chain_palette(folded: &str) -> PaletteMap {
    let mut map = PaletteMap::default();
    for line in folded.lines() {
        let stack = line.rsplit_once(' ').map_or(line, |(stack, _)| stack);
        // "all" is inferno's root frame.
        for name in std::iter::once("all").chain(stack.split(';')) {
            if map.get(name).is_some() {
                continue;
            }
            let shade = name.bytes().fold(0u32, |hash, byte| {
                hash.wrapping_mul(31).wrapping_add(byte.into())
            }) % 55;
            let shade = shade as u8;
            let color = if name.ends_with("_[w]") {
                Color {
                    r: 50 + shade,
                    g: 165 + shade,
                    b: 165 + shade,
                }
            } else {
                Color {
                    r: 80 + shade,
                    g: 80 + shade,
                    b: 190 + shade,
                }
            };
            map.insert(name, color);
        }
    }
    map
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
    use crate::model::profile::WakerContext;
    use crate::output::folded::tests::{frame, profile, sample, woken_reader};

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
    fn off_wake_graphs_draw_wakers_aqua_and_blocked_frames_blue() {
        let mut p = profile(vec![woken_reader(
            WakerContext::Task,
            &["pipe_write", "try_to_wake_up"],
        )]);
        p.kind = ProfileKind::OffWake;
        let svg = String::from_utf8(render(&p, FoldOptions::default(), "s").unwrap()).unwrap();
        assert!(svg.contains("Off-Wake Time Flame Graph"));
        let fills: Vec<(u8, u8, u8)> = svg
            .split("fill=\"rgb(")
            .skip(1)
            .filter_map(|rest| {
                let (rgb, _) = rest.split_once(')')?;
                let mut parts = rgb.split(',').map(|v| v.trim().parse::<u8>().ok());
                Some((parts.next()??, parts.next()??, parts.next()??))
            })
            .collect();
        let aqua = fills
            .iter()
            .filter(|(r, g, b)| g == b && *g >= 165 && r < g)
            .count();
        let blue = fills
            .iter()
            .filter(|(r, g, b)| r == g && *b >= 190 && r < b)
            .count();
        // Waker: try_to_wake_up, pipe_write, inlined_send, send, main, writer.
        assert_eq!(aqua, 6, "{fills:?}");
        // Blocked: all, reader, main, wait_for_data, schedule.
        assert_eq!(blue, 5, "{fills:?}");
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
