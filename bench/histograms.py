#!/usr/bin/env python3
"""Overhead of runqlat and syscount -L under a context-switch storm.

  python3 bench/histograms.py [--rounds N] [--loops L]

Throughput of `taskset -c 0 perf bench sched pipe -l L` with each tool
running system-wide, divided by untraced throughput, interleaved with the
libbpf-tools equivalents when installed. Target >= 0.90 each.
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
    tracers = [
        Tracer("bpfscope runqlat", [BPFSCOPE, "runqlat"], ready_text="tracing run-queue latency"),
        Tracer("libbpf-tools runqlat", ["/usr/sbin/runqlat"], settle=2.0),
        Tracer("bpfscope syscount -L", [BPFSCOPE, "syscount", "-L"], ready_text="tracing syscalls"),
        Tracer("libbpf-tools syscount -L", ["/usr/sbin/syscount", "-L"], settle=2.0),
    ]
    tracers = [tracer for tracer in tracers if tracer.available()]
    ratios = interleaved_ratios(workload, tracers, args.rounds, parse=ops_per_second)
    report_ratios("perf bench sched pipe throughput, traced / untraced (target >= 0.90):", ratios)


if __name__ == "__main__":
    sys.exit(main())
