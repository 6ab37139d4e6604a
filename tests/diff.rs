//! End-to-end tests of `bpfscope diff`: exact difffolded lines on small
//! hand-made profiles, pprof input, and a real before/after pair (cpu_split
//! with burn_one made twice as slow) whose differential flame graph shows
//! that function grown and the rest unchanged.

mod common;

use std::fs;

use common::*;

#[test]
fn hand_made_profiles_give_exact_difffolded_lines() {
    let dir = tmp_dir().join(format!("diff-hand-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let (before, after) = (dir.join("before.folded"), dir.join("after.folded"));
    fs::write(&before, "app;main;a 3\napp;main;b 1\n").unwrap();
    fs::write(&after, "app;main;a 1\napp;main;c 2\napp;main;a 1\n").unwrap();
    let output = run(bpfscope().arg("diff").arg(&before).arg(&after));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "app;main;a 3 2\napp;main;b 1 0\napp;main;c 0 2\n"
    );
    // -n scales before (4) to after's total (4 here: unchanged) ...
    let output = run(bpfscope().arg("diff").arg("-n").arg(&before).arg(&after));
    assert_eq!(
        stdout(&output),
        "app;main;a 3 2\napp;main;b 1 0\napp;main;c 0 2\n"
    );
    // ... and with after doubled, before is doubled too.
    fs::write(&after, "app;main;a 4\napp;main;c 4\n").unwrap();
    let output = run(bpfscope().arg("diff").arg("-n").arg(&before).arg(&after));
    assert_eq!(
        stdout(&output),
        "app;main;a 6 4\napp;main;b 2 0\napp;main;c 0 4\n"
    );
    // Bad input: one line naming the file and the line.
    fs::write(&after, "app;main;a 4\nnot a count\n").unwrap();
    let output = run(bpfscope().arg("diff").arg(&before).arg(&after));
    assert_eq!(output.status.code(), Some(1));
    let error = stderr(&output);
    assert!(
        error.contains("line 2") && error.lines().count() == 1,
        "{error}"
    );
}

/// (samples, change in percent) of each frame of `function`, from the
/// titles inferno writes, e.g. "spin (1,234 samples, 40.00%; +19.90%)".
/// As in flamegraph.pl, the change is drawn on the leaf frame of a stack.
fn frames_of(svg: &str, function: &str) -> Vec<(String, f64)> {
    let prefix = format!("<title>{function} (");
    svg.match_indices(&prefix)
        .map(|(start, _)| {
            let title = &svg[start + prefix.len()..];
            let title = &title[..title.find("</title>").unwrap()];
            let samples = title.split(' ').next().unwrap().to_string();
            let delta = title
                .rsplit("; ")
                .next()
                .unwrap()
                .trim_end_matches(')')
                .trim_end_matches('%')
                .parse()
                .unwrap_or_else(|_| panic!("no change in {title}"));
            (samples, delta)
        })
        .collect()
}

/// The change drawn on the leaf (`spin`) below `caller`: the spin frame
/// nearest its caller's samples, within 5 % of them (a few of the caller's
/// samples can land outside spin; burn_one's and burn_three's differ 2 or
/// 3 times over).
fn leaf_change_under(svg: &str, caller: &str) -> f64 {
    let count = |samples: &str| samples.replace(',', "").parse::<u64>().unwrap_or(0);
    let caller_samples = frames_of(svg, caller)
        .iter()
        .map(|(samples, _)| count(samples))
        .max()
        .unwrap_or_else(|| panic!("no frame {caller}"));
    let (spin_samples, change) = frames_of(svg, "spin")
        .into_iter()
        .map(|(samples, change)| (count(&samples), change))
        .min_by_key(|(samples, _)| samples.abs_diff(caller_samples))
        .unwrap_or_else(|| panic!("no spin frame"));
    assert!(
        spin_samples.abs_diff(caller_samples) * 20 <= caller_samples,
        "no spin frame near {caller}'s {caller_samples} samples (nearest {spin_samples})"
    );
    change
}

#[test]
fn a_function_made_twice_as_slow_is_the_one_that_grew() {
    let _serial = serial();
    let dir = tmp_dir().join(format!("diff-real-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let normal = workload("cpu_split");
    // Under the same name, so both profiles root at the same process name.
    let slower = dir.join("cpu_split");
    let variant = workload_variant(
        "cpu_split",
        "_slow_one",
        &[
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
            "-DONE_WEIGHT=2",
        ],
    );
    fs::copy(variant, &slower).unwrap();
    // Each run profiled whole (-- COMMAND), 3 s each.
    let profile = |binary: &std::path::Path, out: &std::path::Path| {
        let output = run(bpfscope()
            .args(["profile", "-F", "999", "-o"])
            .arg(out)
            .arg("--")
            .arg(binary)
            .arg("3"));
        assert!(output.status.success(), "{}", stderr(&output));
    };
    let (before, after) = (dir.join("before.pb.gz"), dir.join("after.folded"));
    profile(&normal, &before);
    profile(&slower, &after);
    let svg_path = dir.join("diff.svg");
    let output = run(bpfscope()
        .arg("diff")
        .arg(&before)
        .arg(&after)
        .arg("-o")
        .arg(&svg_path));
    assert!(output.status.success(), "{}", stderr(&output));
    let svg = fs::read_to_string(&svg_path).unwrap();
    assert!(svg.contains("Differential Flame Graph"));
    // The runs take the same time, so the slower burn_one takes a larger share: 2/5 instead of 1/4.
    let grown = leaf_change_under(&svg, "burn_one");
    let shrunk = leaf_change_under(&svg, "burn_three");
    assert!(grown > 10.0, "burn_one grew by {grown}%");
    assert!(shrunk < -10.0, "burn_three shrank by {shrunk}%");
}
