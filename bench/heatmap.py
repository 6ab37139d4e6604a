#!/usr/bin/env python3
"""Benchmark for `bpfscope profile -o x.html` (the subsecond heatmap).

  python3 bench/heatmap.py [--rounds N] [--seconds S]

1. Throughput of a CPU-bound workload (bench/workloads/spin.c on CPU 1)
   profiled system-wide at 99 Hz with the heatmap, divided by its untraced
   throughput, interleaved with the same profile written as folded stacks
   (no time slots) and with `perf record -F 99 -a -g`. Target >= 0.99.
2. What a heatmap of S seconds (default 60) at 99 Hz costs while that
   workload and a process churn run: entries of the in-kernel counts map
   (one per 20 ms slot and stack), the page's size, and peak RSS.
"""
import argparse
import os
import re
import subprocess
import sys

from common import BPFSCOPE, Tracer, build_workload, ensure_release_build, interleaved_ratios, report_ratios


def heatmap_cost(seconds):
    spin = build_workload("spin")
    short = build_workload("short_burn", "tests/workloads")
    churn = subprocess.Popen(["sh", "-c", f"while :; do {short} 20; done"])
    burner = subprocess.Popen([spin, str(seconds + 5)], stdout=subprocess.DEVNULL)
    page = "/tmp/bpfscope-bench-heatmap.html"
    profiler = subprocess.Popen([BPFSCOPE, "profile", "-F", "99", "-o", page, str(seconds)],
                                stderr=subprocess.PIPE, text=True)
    stderr = profiler.stderr.read()
    _, status, usage = os.wait4(profiler.pid, 0)
    for process in (churn, burner):
        process.kill()
        process.wait()
    if status != 0:
        raise RuntimeError(f"bpfscope profile failed: {stderr}")
    html = open(page).read()
    cells = len(re.findall(r"\[\d+,\d+,\d+\]", html))
    print(f"{seconds} s heatmap at 99 Hz, system-wide with churn: {cells} (slot, stack) entries "
          f"(in-kernel counts map: {cells} x 56 bytes of key and value), page {len(html) / 1e6:.2f} MB, "
          f"peak RSS {usage.ru_maxrss / 1024:.1f} MB")
    print("  " + next((line for line in stderr.splitlines() if "samples" in line), "").strip())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    ensure_release_build()

    spin = build_workload("spin")
    workload = ["taskset", "-c", "1", spin, "5"]
    tracers = [
        Tracer("bpfscope profile -F 99 -o x.html", [BPFSCOPE, "profile", "-F", "99", "-o",
                                                    "/tmp/bpfscope-bench.html"], ready_text="sampling"),
        Tracer("bpfscope profile -F 99 -o x.folded", [BPFSCOPE, "profile", "-F", "99", "-o",
                                                      "/tmp/bpfscope-bench.folded"], ready_text="sampling"),
    ]
    peer = Tracer("perf record -F 99 -a -g", ["perf", "record", "-F", "99", "-a", "-g", "-q", "-o",
                                              "/tmp/bpfscope-bench.perf"])
    if peer.available():
        tracers.append(peer)
    ratios = interleaved_ratios(workload, tracers, args.rounds)
    report_ratios("throughput at 99 Hz system-wide, traced / untraced (target >= 0.99):", ratios)
    heatmap_cost(args.seconds)


if __name__ == "__main__":
    sys.exit(main())
