#!/usr/bin/env python3
"""Benchmark for `bpfscope wakeuptime` and `bpfscope offwaketime` under a
context-switch storm.

  python3 bench/offwake.py [--rounds N] [--loops L]

Throughput of `taskset -c 0 perf bench sched pipe -l L` (every switch is a
pipe wakeup) with each tracer running system-wide at its default settings,
divided by the untraced throughput, interleaved in one run with
`bpfscope offcpu` (for reference) and libbpf-tools `wakeuptime` (install it with `scripts/install-deps.sh
libbpf-tools`). Targets: wakeuptime >= 0.85, offwaketime >= 0.80.
"""
import argparse
import sys

from common import BPFSCOPE, Tracer, ensure_release_build, interleaved_ratios, report_ratios
from offcpu import ops_per_second


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loops", type=int, default=200000)
    args = parser.parse_args()
    ensure_release_build()

    workload = ["taskset", "-c", "0", "perf", "bench", "sched", "pipe", "-l", str(args.loops)]
    peer = Tracer("libbpf-tools wakeuptime", ["/usr/sbin/wakeuptime"], settle=2.0)
    if not peer.available():
        raise SystemExit("libbpf-tools wakeuptime is missing: run scripts/install-deps.sh libbpf-tools")
    tracers = [
        Tracer("bpfscope wakeuptime", [BPFSCOPE, "wakeuptime", "-o", "/tmp/bpfscope-bench-wakeup.folded"],
               ready_text="tracing blocked"),
        Tracer("bpfscope offwaketime", [BPFSCOPE, "offwaketime", "-o", "/tmp/bpfscope-bench-offwake.folded"],
               ready_text="tracing blocked"),
        Tracer("bpfscope offcpu (reference)", [BPFSCOPE, "offcpu", "-o", "/tmp/bpfscope-bench-offcpu.folded"],
               ready_text="tracing off-CPU"),
        peer,
    ]
    ratios = interleaved_ratios(workload, tracers, args.rounds, parse=ops_per_second)
    report_ratios("perf bench sched pipe throughput, traced / untraced "
                  "(targets: wakeuptime >= 0.85, offwaketime >= 0.80):", ratios)


if __name__ == "__main__":
    sys.exit(main())
