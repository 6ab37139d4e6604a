#!/usr/bin/env python3
"""Benchmark for `bpfscope offcpu` under a context-switch storm.

  python3 bench/offcpu.py [--rounds N] [--loops L]

Throughput of `taskset -c 0 perf bench sched pipe -l L` (about 360k context
switches/s here) with `bpfscope offcpu` running system-wide at its default
settings, divided by the untraced throughput, interleaved with libbpf-tools
`offcputime` and `perf record -e sched:sched_switch -a -g` when installed.
Target >= 0.90.
"""
import argparse
import re
import subprocess
import sys

from common import BPFSCOPE, Tracer, ensure_release_build, interleaved_ratios, report_ratios


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loops", type=int, default=200000)
    args = parser.parse_args()
    ensure_release_build()

    workload = ["taskset", "-c", "0", "perf", "bench", "sched", "pipe", "-l", str(args.loops)]
    tracers = [Tracer("bpfscope offcpu", [BPFSCOPE, "offcpu", "-o", "/tmp/bpfscope-bench-offcpu.folded"],
                      ready_text="tracing off-CPU"),
               Tracer("bpfscope offcpu --unwind fp",
                      [BPFSCOPE, "offcpu", "--unwind", "fp", "-o", "/tmp/bpfscope-bench-offcpu.folded"],
                      ready_text="tracing off-CPU"),
               # The cost of looking for Python frames: the workload, Debian's perf,
               # links libpython without starting it, so its threads have no thread state.
               Tracer("bpfscope offcpu --no-python",
                      [BPFSCOPE, "offcpu", "--no-python", "-o", "/tmp/bpfscope-bench-offcpu.folded"],
                      ready_text="tracing off-CPU")]
    peers = [
        Tracer("libbpf-tools offcputime", ["/usr/sbin/offcputime"], settle=2.0),
        Tracer("perf record sched_switch -g", ["perf", "record", "-e", "sched:sched_switch", "-a", "-g", "-q",
                                               "-o", "/tmp/bpfscope-bench-offcpu.perf"], settle=2.0),
    ]
    tracers += [peer for peer in peers if peer.available()]
    ratios = interleaved_ratios(workload, tracers, args.rounds, parse=ops_per_second)
    report_ratios("perf bench sched pipe throughput, traced / untraced (target >= 0.90):", ratios)


def ops_per_second(output):
    match = re.search(r"([\d.]+)\s+ops/sec", output)
    if not match:
        raise RuntimeError(f"no ops/sec in perf bench output: {output!r}")
    return float(match.group(1))


if __name__ == "__main__":
    sys.exit(main())
