//! End-to-end tests of `bpfscope offwaketime` and `bpfscope wakeuptime`
//! against ground-truth wakeup workloads, with real BPF programs (run as root).

mod common;

use std::fs;

use common::*;

/// The consumer's blocked total within this fraction of the time it measured in FUTEX_WAIT.
const TOTAL_TOLERANCE: f64 = 0.10;
/// Least share of the blocked time that must sit under the expected waker.
const ATTRIBUTED: f64 = 0.90;

/// Runs `bpfscope TOOL -o FILE -- wake_chain MODE SECONDS`; returns the
/// folded stacks, the workload's stdout and bpfscope's stderr.
fn trace(
    tool: &str,
    mode: &str,
    seconds: &str,
    env: &[(&str, &str)],
) -> (Vec<Stack>, String, String) {
    let path = tmp_dir().join(format!("{tool}-{mode}.folded"));
    let output = run(bpfscope()
        .envs(env.iter().copied())
        .arg(tool)
        .arg("-o")
        .arg(&path)
        .arg("--")
        .arg(workload("wake_chain"))
        .args([mode, seconds]));
    assert!(output.status.success(), "{}", stderr(&output));
    (
        parse_folded(&fs::read_to_string(&path).unwrap()),
        stdout(&output),
        stderr(&output),
    )
}

/// The frames before and after the `--` that separates blocked and waker stacks.
fn sides(stack: &Stack) -> (&[String], &[String]) {
    let separator = stack
        .frames
        .iter()
        .position(|frame| frame == "--")
        .unwrap_or_else(|| panic!("no -- in {:?}", stack.frames));
    (&stack.frames[..separator], &stack.frames[separator + 1..])
}

#[test]
fn offwaketime_joins_the_consumers_block_with_the_producers_function() {
    let _serial = serial();
    assert_futex_wakeups_joined(&[]);
}

#[test]
fn the_raw_tracepoint_fallback_joins_them_too() {
    let _serial = serial();
    assert_futex_wakeups_joined(&[("BPFSCOPE_FORCE_RAW_TRACEPOINTS", "1")]);
}

/// wake_chain futex: the consumer's blocked time is what it measured, and
/// ≥ 90 % of it joins wait_for_data with the producer's produce_and_send.
fn assert_futex_wakeups_joined(env: &[(&str, &str)]) {
    let (stacks, report, log) = trace("offwaketime", "futex", "3", env);
    let measured_ms: f64 = report
        .strip_prefix("blocked_ms ")
        .and_then(|ms| ms.trim().parse().ok())
        .unwrap_or_else(|| panic!("no blocked_ms in {report:?}"));
    let consumer = for_comm(&stacks, "consumer");
    let blocked_us = total(&consumer) as f64;
    assert!(
        (blocked_us / 1000.0 - measured_ms).abs() <= TOTAL_TOLERANCE * measured_ms,
        "blocked {:.1} ms, the consumer measured {measured_ms:.1} ms in FUTEX_WAIT; bpfscope said:\n{log}",
        blocked_us / 1000.0
    );
    let joined: u64 = consumer
        .iter()
        .filter(|stack| {
            let (blocked, waker) = sides(stack);
            blocked.iter().any(|f| f == "wait_for_data")
                && waker.iter().any(|f| f == "produce_and_send")
                && waker.last().is_some_and(|name| name == "producer")
        })
        .map(|stack| stack.count)
        .sum();
    assert!(
        joined as f64 >= ATTRIBUTED * blocked_us,
        "only {:.1} % of the consumer's blocked time joins wait_for_data with the producer's produce_and_send: {:#?}",
        100.0 * joined as f64 / blocked_us,
        consumer.iter().take(5).collect::<Vec<_>>()
    );
    // The waker's stack reads from its wakeup call outwards: the kernel's
    // wakeup first, then futex() and its callers, outermost last.
    let sample = consumer
        .iter()
        .find(|stack| sides(stack).1.iter().any(|f| f == "produce_and_send"))
        .unwrap();
    let waker = sides(sample).1;
    let at = |name: &str| waker.iter().position(|f| f == name);
    assert!(
        at("produce_and_send") < at("producer_main") && waker[0].ends_with("_[k]"),
        "waker frames out of order: {waker:?}"
    );
}

#[test]
fn max_block_time_drops_longer_blocks() {
    let _serial = serial();
    let path = tmp_dir().join("offwaketime-max.folded");
    let output = run(bpfscope()
        .args(["offwaketime", "-M", "1000", "-o"])
        .arg(&path)
        .arg("--")
        .arg(workload("wake_chain"))
        .args(["futex", "1"]));
    assert!(output.status.success(), "{}", stderr(&output));
    // The consumer's blocks last about 4 ms: none is 1 ms or less.
    let stacks = parse_folded(&fs::read_to_string(&path).unwrap());
    let consumer = total(&for_comm(&stacks, "consumer"));
    assert!(
        consumer < 20_000,
        "the consumer kept {consumer} us of blocks over 1 ms"
    );
}

#[test]
fn timer_wakeups_are_labelled_interrupt_context() {
    let _serial = serial();
    let (stacks, _, _) = trace("wakeuptime", "sleep", "2", &[]);
    let napper = for_comm(&stacks, "napper");
    let all = total(&napper) as f64;
    assert!(all >= 1.5e6, "napper blocked only {all} us in 2 s");
    let by_interrupt: u64 = napper
        .iter()
        .filter(|stack| {
            let (blocked, waker) = sides(stack);
            blocked == ["napper"]
                && matches!(waker.last().map(String::as_str), Some("[interrupt]"))
                && waker.iter().any(|f| f.starts_with("hrtimer_wakeup"))
                && !waker.iter().any(|f| f == "nap" || f == "napper")
        })
        .map(|stack| stack.count)
        .sum();
    assert!(
        by_interrupt as f64 >= ATTRIBUTED * all,
        "only {:.1} % of napper's blocked time woken by a timer interrupt: {:#?}",
        100.0 * by_interrupt as f64 / all,
        napper.iter().take(5).collect::<Vec<_>>()
    );
    // No task the interrupt landed on is named as the waker, and the idle
    // task never shows as a blocked thread.
    assert!(for_comm(&stacks, "swapper/0").is_empty() && for_comm(&stacks, "swapper/1").is_empty());
}
