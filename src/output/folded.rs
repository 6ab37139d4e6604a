//! Folded stacks in FlameGraph's format: `comm;root;..;leaf count`, one line
//! per distinct stack (below `comm`, the cgroup or container with
//! `--group-by`), JIT frames named as the runtime's perf map names them, kernel frames suffixed `_[k]`, unnamed frames
//! `[unknown]` (with their module where known). Lines are sorted and merged.
//! A blocked stack with a waker (offwaketime, wakeuptime) continues as BCC's
//! `offwaketime -f` writes it: `--`, the waker's frames from its wakeup call
//! down to its outermost frame, then its name.

use std::collections::BTreeMap;

use crate::model::process::GroupBy;
use crate::model::profile::{Frame, FrameKind, Profile, Sample, Waker, WAKER_SEPARATOR};

/// Rendering choices for folded stacks.
#[derive(Debug, Clone, Copy, Default)]
pub struct FoldOptions {
    /// Put a `-` frame between the user and kernel parts (BCC's `-d`).
    pub delimiter: bool,
    /// What the root frame below the process name says.
    pub group_by: GroupBy,
    /// Suffix JIT frames `_[j]` (flamegraph.pl's annotation; SVGs use it
    /// to colour them).
    pub annotate_jit: bool,
    /// Suffix waker frames `_[w]` instead of `_[k]` (flamegraph.pl's
    /// `chain` palette colours them).
    pub annotate_waker: bool,
}

/// Frame names must not contain the separators of the format, nor any
/// other control character (names come from processes and files a user
/// controls: a NUL breaks the SVG's XML, a carriage return a terminal).
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            ';' | '\n' => ':',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

fn push_frame_names(frame: &Frame, options: FoldOptions, out: &mut Vec<String>) {
    let suffix = match frame.kind {
        FrameKind::Kernel => "_[k]",
        FrameKind::Jit if options.annotate_jit => "_[j]",
        _ => "",
    };
    push_names(frame, suffix, false, out);
}

/// A frame's names, outermost function first, or innermost first where the
/// stack is drawn `inverted` (a waker's).
fn push_names(frame: &Frame, suffix: &str, inverted: bool, out: &mut Vec<String>) {
    if frame.functions.is_empty() {
        let name = match &frame.module {
            Some(module) => format!("[unknown] ({})", module.file_name()),
            None => "[unknown]".to_string(),
        };
        out.push(format!("{name}{suffix}"));
        return;
    }
    let names: Box<dyn Iterator<Item = &String>> = if inverted {
        Box::new(frame.functions.iter().rev())
    } else {
        Box::new(frame.functions.iter())
    };
    for function in names {
        out.push(format!("{}{suffix}", sanitize(function)));
    }
}

/// `--`, then the waker's frames from its wakeup call (leaf) outwards, its
/// kernel frames before its user ones, then its name.
fn push_waker(waker: &Waker, options: FoldOptions, names: &mut Vec<String>) {
    let mark = |suffix: &'static str| {
        if options.annotate_waker {
            "_[w]"
        } else {
            suffix
        }
    };
    names.push(WAKER_SEPARATOR.to_string());
    if waker.kernel_missing {
        names.push(format!("[missed kernel stack]{}", mark("")));
    }
    for frame in waker.kernel.iter().rev() {
        push_names(frame, mark("_[k]"), true, names);
    }
    let has_user = !waker.user.is_empty() || waker.user_missing;
    if options.delimiter && has_user && !waker.kernel.is_empty() {
        names.push("-".to_string());
    }
    for frame in waker.user.iter().rev() {
        let suffix = match frame.kind {
            FrameKind::Jit if options.annotate_jit && !options.annotate_waker => "_[j]",
            _ => "",
        };
        push_names(frame, mark(suffix), true, names);
    }
    if waker.user_missing {
        names.push(format!("[missed user stack]{}", mark("")));
    }
    names.push(format!("{}{}", sanitize(&waker.name), mark("")));
}

/// The folded stack (without count) of each sample, merged.
pub fn fold(profile: &Profile, options: FoldOptions) -> BTreeMap<String, u64> {
    let mut folded = BTreeMap::new();
    for sample in &profile.samples {
        *folded.entry(fold_sample(sample, options)).or_insert(0) += sample.value;
    }
    folded
}

/// One sample's folded stack, without its count.
pub fn fold_sample(sample: &Sample, options: FoldOptions) -> String {
    let mut names: Vec<String> = options
        .group_by
        .root_frame(sample.context.as_deref())
        .iter()
        .map(|root| sanitize(root))
        .collect();
    names.push(sanitize(&sample.comm));
    if sample.user_missing {
        names.push("[missed user stack]".to_string());
    }
    for frame in &sample.user {
        push_frame_names(frame, options, &mut names);
    }
    let has_kernel = !sample.kernel.is_empty() || sample.kernel_missing;
    if options.delimiter && has_kernel && names.len() > 1 {
        names.push("-".to_string());
    }
    if sample.kernel_missing {
        names.push("[missed kernel stack]".to_string());
    }
    for frame in &sample.kernel {
        push_frame_names(frame, options, &mut names);
    }
    if let Some(waker) = &sample.waker {
        push_waker(waker, options, &mut names);
    }
    names.join(";")
}

/// Folded text, one `stack count` line each.
pub fn render(profile: &Profile, options: FoldOptions) -> String {
    fold(profile, options)
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}\n"))
        .collect()
}

/// Splits a folded line into its frames and count.
#[cfg(test)]
pub fn parse_line(line: &str) -> Option<(Vec<&str>, u64)> {
    let (stack, count) = line.rsplit_once(' ')?;
    Some((stack.split(';').collect(), count.parse().ok()?))
}

/// Adds line `number` of folded text (`stack count`, as bpfscope,
/// FlameGraph's stackcollapse scripts and inferno write it) to `stacks`,
/// merging repeated stacks; the error names the line if it is not of that
/// form. Returns the bytes of a stack it
/// added (0 when the stack was there already, or the line empty).
pub fn add_line(
    stacks: &mut BTreeMap<String, u64>,
    number: usize,
    line: &str,
) -> Result<usize, String> {
    let line = line.trim_end();
    if line.is_empty() {
        return Ok(0);
    }
    let parsed = line
        .rsplit_once(' ')
        .filter(|(stack, _)| !stack.is_empty())
        .and_then(|(stack, count)| Some((stack, count.parse::<u64>().ok()?)));
    let Some((stack, count)) = parsed else {
        return Err(format!("line {number}: not `stack count`: {line:.60}"));
    };
    let added = if stacks.contains_key(stack) {
        0
    } else {
        stack.len()
    };
    let total: &mut u64 = stacks.entry(stack.to_string()).or_default();
    *total = total.saturating_add(count);
    Ok(added)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::model::module::Module;
    use crate::model::profile::{ProfileKind, WakerContext};

    /// A frame whose address is derived from its names, so distinct frames differ.
    pub fn frame(kind: FrameKind, names: &[&str]) -> Frame {
        let address = names
            .iter()
            .flat_map(|n| n.bytes())
            .fold(0x1000u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
        Frame {
            kind,
            address,
            functions: names.iter().map(|n| n.to_string()).collect(),
            module: None,
            source: None,
        }
    }

    pub fn sample(comm: &str, user: Vec<Frame>, kernel: Vec<Frame>, value: u64) -> Sample {
        Sample {
            pid: 1,
            tid: 1,
            comm: comm.into(),
            context: None,
            user,
            kernel,
            user_missing: false,
            kernel_missing: false,
            waker: None,
            time_slot: 0,
            value,
        }
    }

    pub fn profile(samples: Vec<Sample>) -> Profile {
        Profile {
            kind: ProfileKind::Cpu { hz: 99 },
            duration: Duration::from_secs(1),
            samples,
        }
    }

    /// A reader blocked in wait_for_data, woken by `waker`.
    pub fn woken_reader(context: WakerContext, kernel: &[&str]) -> Sample {
        let mut reader = sample(
            "reader",
            vec![
                frame(FrameKind::User, &["main"]),
                frame(FrameKind::User, &["wait_for_data"]),
            ],
            vec![frame(FrameKind::Kernel, &["schedule"])],
            5,
        );
        let stacks = Sample {
            comm: "writer".into(),
            user: vec![
                frame(FrameKind::User, &["main"]),
                frame(FrameKind::User, &["send", "inlined_send"]),
            ],
            kernel: kernel
                .iter()
                .map(|name| frame(FrameKind::Kernel, &[name]))
                .collect(),
            ..sample("", vec![], vec![], 0)
        };
        reader.waker = Some(Box::new(Waker::new(context, stacks)));
        reader
    }

    #[test]
    fn a_waker_follows_its_blocked_stack_from_its_wakeup_call_outwards() {
        let task = woken_reader(WakerContext::Task, &["pipe_write", "try_to_wake_up"]);
        assert_eq!(
            render(&profile(vec![task]), FoldOptions::default()),
            "reader;main;wait_for_data;schedule_[k];--;try_to_wake_up_[k];pipe_write_[k];inlined_send;send;main;writer 5\n"
        );
        // An interrupt's own frames only: not those of the task it landed on.
        let interrupt = woken_reader(
            WakerContext::Interrupt,
            &[
                "do_idle",
                "asm_sysvec_apic_timer_interrupt",
                "hrtimer_interrupt",
                "hrtimer_wakeup",
            ],
        );
        let options = FoldOptions {
            annotate_waker: true,
            ..FoldOptions::default()
        };
        assert_eq!(
            render(&profile(vec![interrupt]), options),
            "reader;main;wait_for_data;schedule_[k];--;hrtimer_wakeup_[w];hrtimer_interrupt_[w];asm_sysvec_apic_timer_interrupt_[w];[interrupt]_[w] 5\n"
        );
    }

    #[test]
    fn folds_user_then_kernel_root_first() {
        let p = profile(vec![
            sample(
                "burn",
                vec![
                    frame(FrameKind::User, &["main"]),
                    frame(FrameKind::User, &["work", "inlined_leaf"]),
                ],
                vec![frame(
                    FrameKind::Kernel,
                    &["asm_sysvec_apic_timer_interrupt"],
                )],
                3,
            ),
            sample("burn", vec![frame(FrameKind::User, &["main"])], vec![], 2),
            sample("burn", vec![frame(FrameKind::User, &["main"])], vec![], 1),
        ]);
        let text = render(&p, FoldOptions::default());
        assert_eq!(
            text,
            "burn;main 3\nburn;main;work;inlined_leaf;asm_sysvec_apic_timer_interrupt_[k] 3\n"
        );
        let with_delimiter = render(
            &p,
            FoldOptions {
                delimiter: true,
                ..FoldOptions::default()
            },
        );
        assert!(with_delimiter
            .contains("burn;main;work;inlined_leaf;-;asm_sysvec_apic_timer_interrupt_[k] 3"));
        for line in text.lines() {
            let (frames, count) = parse_line(line).unwrap();
            assert_eq!(frames[0], "burn");
            assert!(count > 0);
        }
    }

    #[test]
    fn unknown_frames_keep_their_module_and_separators_are_escaped() {
        let mut unknown = frame(FrameKind::User, &[]);
        unknown.module = Some(Arc::new(Module {
            path: PathBuf::from("/usr/lib/libc.so.6"),
            start: 0,
            end: 1,
            file_offset: 0,
            device: "fe:01".into(),
            inode: 456,
            build_id: None,
        }));
        let hostile = frame(FrameKind::User, &["f\r\0\x1b[2J"]);
        let mut missing = sample(
            "a;b",
            vec![hostile, unknown, frame(FrameKind::User, &[])],
            vec![],
            1,
        );
        missing.kernel_missing = true;
        let text = render(&profile(vec![missing]), FoldOptions::default());
        assert_eq!(
            text,
            "a:b;f???[2J;[unknown] (libc.so.6);[unknown];[missed kernel stack] 1\n"
        );
    }
}
