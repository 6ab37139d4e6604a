#!/usr/bin/env python3
"""Python frames against py-spy (issue: Python stacks without -X perf).

  python3 bench/python.py [--rounds N] [--python python3.12]

The workload (tests/workloads/split.py, pinned to CPU 1; the profilers to
CPU 0) runs burn_three and burn_one rounds (3:1) for 7 s and prints the units
of work it finished between its second 1 and second 7. Each round runs it untraced, then under `bpfscope
profile -p PID` and `py-spy record -p PID` at 99 Hz and 999 Hz, each traced
run between two untraced ones (interleaved). Printed per profiler and rate:
- throughput: units traced / mean of the untraced runs around it;
- the profiler's own CPU (user + system of its process, from wait4), as a
  share of one core over the run; BPF programs run in the workload's
  context, so their cost is in the throughput;
- named share: samples with a Python function of the workload / all samples
  of the process (py-spy: its "Samples:" count).
py-spy runs in its default mode (it pauses the process for each sample).
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import BPFSCOPE, ROOT, ensure_release_build

WORKLOAD = os.path.join(ROOT, "tests", "workloads", "split.py")
SECONDS = "7"


def find_py_spy():
    found = shutil.which("py-spy")
    if found:
        return found
    target = os.path.join(ROOT, "target", "bench", "py-spy")
    if not os.path.exists(os.path.join(target, "bin", "py-spy")):
        print("installing py-spy from PyPI into target/bench/py-spy", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--prefix", target, "py-spy"],
                       check=True)
    return os.path.join(target, "bin", "py-spy")


def start_workload(python):
    return subprocess.Popen(["taskset", "-c", "1", python, WORKLOAD, SECONDS], stdout=subprocess.PIPE,
                            text=True)


def finish_workload(process):
    out, _ = process.communicate()
    return int(out.split()[-1])


def untraced(python):
    return finish_workload(start_workload(python))


def cpu_share(usage, elapsed):
    return (usage.ru_utime + usage.ru_stime) / elapsed


def traced_bpfscope(python, hz, output):
    workload = start_workload(python)
    started = time.monotonic()
    profiler = subprocess.Popen(["taskset", "-c", "0", BPFSCOPE, "profile", "-F", hz, "-p", str(workload.pid),
                                 "-o", output],
                                stderr=subprocess.PIPE, text=True)
    rounds = finish_workload(workload)
    summary = profiler.stderr.read()
    _, status, usage = os.wait4(profiler.pid, 0)
    if status != 0:
        raise RuntimeError(f"bpfscope failed: {summary}")
    total = named = 0
    with open(output) as handle:
        for line in handle:
            stack, count = line.rsplit(" ", 1)
            total += int(count)
            if "split.py:" in stack:
                named += int(count)
    return rounds, cpu_share(usage, time.monotonic() - started), named / max(total, 1)


def traced_py_spy(py_spy, python, hz, output):
    workload = start_workload(python)
    started = time.monotonic()
    profiler = subprocess.Popen(["taskset", "-c", "0", py_spy, "record", "-r", hz, "-p", str(workload.pid), "-f",
                                 "raw", "-o", output],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rounds = finish_workload(workload)
    report = profiler.stdout.read()
    _, status, usage = os.wait4(profiler.pid, 0)
    samples = re.search(r"Samples: (\d+)", report)
    if not samples:
        raise RuntimeError(f"py-spy: {report}")
    named = 0
    with open(output) as handle:
        for line in handle:
            stack, count = line.rsplit(" ", 1)
            if "split.py" in stack:
                named += int(count)
    return rounds, cpu_share(usage, time.monotonic() - started), named / max(int(samples.group(1)), 1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--python", default="python3.12")
    args = parser.parse_args()
    ensure_release_build()
    python = shutil.which(args.python) or args.python
    py_spy = find_py_spy()
    scratch = tempfile.mkdtemp(prefix="bpfscope-bench-python-")
    results = {}
    for round_number in range(args.rounds):
        before = untraced(python)
        for hz in ("99", "999"):
            for name, run in (("bpfscope", lambda: traced_bpfscope(python, hz, f"{scratch}/b.folded")),
                              ("py-spy", lambda: traced_py_spy(py_spy, python, hz, f"{scratch}/p.txt"))):
                rounds, cpu, named = run()
                after = untraced(python)
                results.setdefault((name, hz), []).append((rounds / ((before + after) / 2), cpu, named))
                before = after
        print(f"  round {round_number + 1}/{args.rounds}: " + ", ".join(
            f"{name} {hz} Hz {values[-1][0]:.3f}" for (name, hz), values in results.items()), file=sys.stderr)
    print(f"Python {python}, {args.rounds} interleaved rounds (median, min–max):")
    print("| profiler | rate | throughput traced / untraced | profiler CPU (share of a core) | named share |")
    print("|---|---|---|---|---|")
    for (name, hz), values in results.items():
        throughput = [v[0] for v in values]
        cpu = statistics.median(v[1] for v in values)
        named = statistics.median(v[2] for v in values)
        print(f"| {name} | {hz} Hz | {statistics.median(throughput):.3f} ({min(throughput):.3f}–"
              f"{max(throughput):.3f}) | {cpu * 100:.2f} % | {named * 100:.1f} % |")


if __name__ == "__main__":
    main()
