#!/usr/bin/env python3
"""Benchmarks for table-driven unwinding (`--unwind`, issue: .eh_frame unwinding in BPF).

  python3 bench/unwind.py [--rounds N]

1. Table build time and size for libc and a large library (rustc's LLVM),
   cold (`unwind-table --no-cache`) and from the disk cache.
2. BPF time per sample and samples unwound per CPU-second of BPF time, with
   frame pointers and with tables, system-wide at 999 Hz while a workload
   without frame pointers runs (kernel.bpf_stats_enabled for the run).
3. Memory of the unwinding maps during a 10 s system-wide run (bpftool's
   memlock figures for unwind_* / unwound_* maps, and rows in use).
4. Throughput of a CPU-bound workload profiled system-wide at 99 Hz and at
   999 Hz with tables vs frame pointers, each divided by the untraced run,
   interleaved.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

from common import (BPFSCOPE, BUILD, ROOT, Tracer, build_workload, ensure_release_build,
                    interleaved_ratios, report_ratios)


def table_figures():
    candidates = ["/lib/x86_64-linux-gnu/libc.so.6"]
    llvm = sorted(glob.glob(os.path.expanduser("~/.rustup/toolchains/*/lib/libLLVM.so.*")))
    if llvm:
        candidates.append(llvm[0])
    for path in candidates:
        cold = subprocess.run([BPFSCOPE, "unwind-table", "--no-cache", path], check=True,
                              capture_output=True, text=True).stdout.splitlines()[0]
        subprocess.run([BPFSCOPE, "unwind-table", path], check=True, capture_output=True)  # fills the cache
        cached = subprocess.run([BPFSCOPE, "unwind-table", path], check=True,
                                capture_output=True, text=True).stdout.splitlines()[0]
        rows = re.search(r"(\d+) rows, (\d+) KiB", cold)
        cold_ms = re.search(r"in ([\d.]+) ms", cold).group(1)
        cached_ms = re.search(r"in ([\d.]+) ms", cached).group(1)
        print(f"table of {path}: {rows.group(1)} rows, {rows.group(2)} KiB in BPF maps; "
              f"built cold in {cold_ms} ms, from cache in {cached_ms} ms")


def nofp_workload():
    os.makedirs(BUILD, exist_ok=True)
    binary = os.path.join(BUILD, "cpu_split_nofp")
    subprocess.run(["clang", "-O2", "-g", "-fomit-frame-pointer", "-fno-optimize-sibling-calls", "-o", binary,
                    os.path.join(ROOT, "tests/workloads/cpu_split.c")], check=True)
    return binary


def bpf_cost(mode, workload):
    """(ns of BPF time per sample, samples) of sample_stack over a 6 s system-wide run."""
    burners = [subprocess.Popen([workload, "12"], stdout=subprocess.DEVNULL) for _ in range(2)]
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        previous = f.read().strip()
    with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
        f.write("1")
    try:
        profiler = subprocess.Popen([BPFSCOPE, "profile", "-F", "999", "--unwind", mode, "6"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(5.5)
        programs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], check=True,
                                             capture_output=True, text=True).stdout)
        profiler.wait()
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(previous)
        for burner in burners:
            burner.kill()
            burner.wait()
    sampler = [p for p in programs if p.get("name") == "sample_stack"]
    run_ns = sum(p.get("run_time_ns", 0) for p in sampler)
    runs = sum(p.get("run_cnt", 0) for p in sampler)
    return run_ns / max(runs, 1), runs


def map_memory():
    """(bytes of memlock in unwinding maps, summary lines) during a 10 s system-wide run."""
    profiler = subprocess.Popen([BPFSCOPE, "profile", "-F", "99", "--unwind", "auto", "10"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(9)
    maps = json.loads(subprocess.run(["bpftool", "-j", "map", "show"], check=True,
                                     capture_output=True, text=True).stdout)
    _, stderr = profiler.communicate()
    memlock = sum(m.get("bytes_memlock", 0) for m in maps
                  if m.get("name", "").startswith(("unwind_", "unwound_")))
    tables = [line for line in stderr.splitlines() if "unwind tables" in line or "walks" in line]
    return memlock, tables


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ensure_release_build()

    table_figures()

    workload = nofp_workload()
    for mode in ["fp", "dwarf"]:
        ns, runs = bpf_cost(mode, workload)
        print(f"--unwind {mode}: {ns / 1000:.2f} us of BPF time per sample over {runs} samples "
              f"= {1e9 / ns:,.0f} samples per CPU-second of BPF time")

    memlock, tables = map_memory()
    print(f"unwinding maps, 10 s system-wide at 99 Hz: {memlock / 2**20:.1f} MiB memlock")
    for line in tables:
        print("  " + line)

    spin = build_workload("spin")
    workload_argv = ["taskset", "-c", "1", spin, "5"]
    for hz in ["99", "999"]:
        tracers = [Tracer(f"bpfscope profile -F {hz} --unwind {mode}",
                          [BPFSCOPE, "profile", "-F", hz, "--unwind", mode, "-o", "/tmp/bpfscope-bench.folded"],
                          ready_text="sampling")
                   for mode in ["fp", "dwarf"]]
        ratios = interleaved_ratios(workload_argv, tracers, args.rounds)
        report_ratios(f"throughput at {hz} Hz system-wide, traced / untraced:", ratios)


if __name__ == "__main__":
    sys.exit(main())
