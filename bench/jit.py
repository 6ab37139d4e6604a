#!/usr/bin/env python3
"""Benchmarks for JIT profiling (issue: JIT runtimes).

  python3 bench/jit.py [--rounds N]

1. Throughput of a Node workload (node --perf-basic-prof, pinned to one CPU)
   profiled system-wide at 99 Hz and at 999 Hz, divided by its untraced
   throughput, interleaved with `perf record -g -a` at the same rates.
2. Reading a 200,000-line perf map: the time bpfscope's summary reports for
   it and the peak RSS it adds to `bpfscope profile -p PID 1` (median of 5
   runs with the map against 5 without, interleaved).
"""
import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile

from common import BPFSCOPE, ROOT, Tracer, ensure_release_build, interleaved_ratios, report_ratios

MAP_LINES = 200_000


def node_overhead(rounds):
    workload = ["taskset", "-c", "1", "node", "--perf-basic-prof",
                os.path.join(ROOT, "bench", "workloads", "node_spin.js"), "5"]
    tracers = []
    for hz in ("99", "999"):
        tracers.append(Tracer(f"bpfscope profile -F {hz}", [BPFSCOPE, "profile", "-F", hz, "-o",
                                                             "/tmp/bpfscope-bench.folded"],
                              ready_text="sampling"))
        tracers.append(Tracer(f"perf record -F {hz} -a -g", ["perf", "record", "-F", hz, "-a", "-g", "-q",
                                                             "-o", "/tmp/bpfscope-bench.perf"]))
    for tracer in tracers:
        if not tracer.available():
            raise SystemExit(f"{tracer.argv[0]} is missing: run scripts/install-deps.sh")
    ratios = interleaved_ratios(workload, tracers, rounds)
    report_ratios("Node throughput, traced / untraced, system-wide:", ratios)


def profile_once(pid):
    """(perf-map read time in ms or None, peak RSS in MB) of one short profile."""
    process = subprocess.Popen([BPFSCOPE, "profile", "-p", str(pid), "1"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    summary = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"bpfscope profile failed: {summary}")
    found = re.search(r"perf maps: 1 processes, (\d+) entries \((\d+) lines read in (\d+) ms\)", summary)
    if found and int(found.group(1)) != MAP_LINES:
        raise RuntimeError(f"expected {MAP_LINES} entries: {found.group(0)}")
    return (int(found.group(3)) if found else None), usage.ru_maxrss / 1024


def perf_map_cost():
    target = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    path = f"/tmp/perf-{target.pid}.map"
    rng = random.Random(1)
    lines = []
    address = 0x7f0000000000
    for index in range(MAP_LINES):
        size = rng.randrange(0x40, 0x400)
        lines.append(f"{address:x} {size:x} LazyCompile:*handler{index} /srv/app/routes/r{index % 500}.js:{index % 90}\n")
        address += size + 0x10
    try:
        times, with_map, without_map = [], [], []
        for _ in range(5):
            with open(path, "w") as handle:
                handle.writelines(lines)
            elapsed, rss = profile_once(target.pid)
            times.append(elapsed)
            with_map.append(rss)
            os.unlink(path)
            elapsed, rss = profile_once(target.pid)
            if elapsed is not None:
                raise RuntimeError("a perf map was read without one")
            without_map.append(rss)
        size_mb = sum(len(line) for line in lines) / 1e6
        print(f"perf map of {MAP_LINES} lines ({size_mb:.1f} MB): read in median {statistics.median(times)} ms "
              f"(min {min(times)}, max {max(times)}, 5 runs); peak RSS {statistics.median(with_map):.1f} MB "
              f"with it, {statistics.median(without_map):.1f} MB without "
              f"(+{statistics.median(with_map) - statistics.median(without_map):.1f} MB)")
    finally:
        target.kill()
        target.wait()
        if os.path.exists(path):
            os.unlink(path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_release_build()
    # V8 writes isolate-*.log files in its working directory.
    os.chdir(tempfile.mkdtemp(prefix="bpfscope-bench-"))
    perf_map_cost()
    node_overhead(args.rounds)


if __name__ == "__main__":
    sys.exit(main())
