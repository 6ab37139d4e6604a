#!/usr/bin/env python3
"""Benchmarks for `bpfscope profile` (issue: profile foundation).

  python3 bench/profile.py [--rounds N] [--rss-seconds S]

1. Start -> probes attached: median of 10 system-wide starts (time from spawn
   until bpfscope says it is sampling). Target <= 100 ms.
2. Peak RSS of a system-wide profile at 99 Hz while a process-churn and a CPU
   workload run, written as SVG. Target <= 50 MB.
3. Throughput of a CPU-bound workload profiled system-wide at 999 Hz, divided
   by its untraced throughput, interleaved with peers (perf record -g,
   bpftrace profile:hz) when installed. Target >= 0.98.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

from common import (BPFSCOPE, Tracer, build_workload, ensure_release_build, interleaved_ratios,
                    report_ratios)


def startup_ms():
    times = []
    for _ in range(10):
        start = time.monotonic()
        process = subprocess.Popen([BPFSCOPE, "profile", "-F", "99", "1"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        for line in process.stderr:
            if "sampling" in line:
                times.append((time.monotonic() - start) * 1000)
                break
        process.communicate()
    return times


def peak_rss_mb(seconds):
    spin = build_workload("spin")
    short = build_workload("short_burn", "tests/workloads")
    churn = subprocess.Popen(["sh", "-c", f"while :; do {short} 20; done"])
    burner = subprocess.Popen([spin, str(seconds + 5)], stdout=subprocess.DEVNULL)
    profiler = subprocess.Popen([BPFSCOPE, "profile", "-F", "99", "-o", "/tmp/bpfscope-bench.svg", str(seconds)],
                                stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(profiler.pid, 0)
    churn.kill()
    burner.kill()
    churn.wait()
    burner.wait()
    if status != 0:
        raise RuntimeError(f"bpfscope profile failed with status {status}")
    return usage.ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rss-seconds", type=int, default=30)
    args = parser.parse_args()
    ensure_release_build()

    times = startup_ms()
    print(f"start -> attached: median {statistics.median(times):.1f} ms "
          f"(min {min(times):.1f}, max {max(times):.1f}, 10 runs)  target <= 100 ms")

    print(f"peak RSS, {args.rss_seconds} s system-wide at 99 Hz with process churn: "
          f"{peak_rss_mb(args.rss_seconds):.1f} MB  target <= 50 MB")

    spin = build_workload("spin")
    workload = ["taskset", "-c", "1", spin, "5"]
    tracers = [Tracer("bpfscope profile -F 999", [BPFSCOPE, "profile", "-F", "999", "-o", "/tmp/bpfscope-bench.folded"],
                      ready_text="sampling")]
    peers = [
        Tracer("perf record -F 999 -a -g", ["perf", "record", "-F", "999", "-a", "-g", "-q", "-o", "/tmp/bpfscope-bench.perf"]),
        Tracer("bpftrace profile:hz:999", ["bpftrace", "-e", "profile:hz:999 { @[kstack, ustack, comm] = count(); }"],
               ready_text="Attaching"),
    ]
    tracers += [peer for peer in peers if peer.available()]
    ratios = interleaved_ratios(workload, tracers, args.rounds)
    report_ratios("throughput at 999 Hz system-wide, traced / untraced (target >= 0.98):", ratios)


if __name__ == "__main__":
    sys.exit(main())
