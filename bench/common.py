"""Shared helpers for bpfscope benchmarks: building workloads, starting a
tracer and waiting until it is attached, interleaved ratio measurements."""
import os
import signal
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BPFSCOPE = os.path.join(ROOT, "target", "release", "bpfscope")
BUILD = os.path.join(ROOT, "target", "bench")


def build_workload(name, source_dir="bench/workloads"):
    os.makedirs(BUILD, exist_ok=True)
    binary = os.path.join(BUILD, name)
    subprocess.run(
        ["clang", "-O2", "-g", "-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer",
         "-o", binary, os.path.join(ROOT, source_dir, name + ".c")],
        check=True)
    return binary


def ensure_release_build():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)


class Tracer:
    """A tracer process started before a measurement and stopped after it."""

    def __init__(self, name, argv, ready_text=None, settle=1.0):
        self.name, self.argv, self.ready_text, self.settle = name, argv, ready_text, settle
        self.process = None

    def available(self):
        return shutil.which(self.argv[0]) is not None or os.path.exists(self.argv[0])

    def __enter__(self):
        # Tools announce readiness on stdout (bpftrace) or stderr (bpfscope).
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        if self.ready_text:
            while True:
                line = self.process.stdout.readline()
                if not line:
                    raise RuntimeError(f"{self.name} exited before attaching")
                if self.ready_text in line:
                    break
        time.sleep(self.settle)
        return self

    def __exit__(self, *exc):
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()


def last_number(output):
    return float(output.strip().split()[-1])


def run_workload(argv, parse=last_number):
    """Runs the workload and returns its throughput as `parse` reads it from stdout."""
    return parse(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)


def interleaved_ratios(workload_argv, tracers, rounds, parse=last_number):
    """Runs the workload untraced and under each tracer, interleaved, `rounds`
    times; returns {tracer name: [traced/untraced per round]}.

    Every traced run sits between two untraced runs and is divided by their
    mean, so a drift of the host's speed (a VM's neighbours) during a round
    does not show up as tracing overhead."""
    ratios = {tracer.name: [] for tracer in tracers}
    for round_number in range(rounds):
        before = run_workload(workload_argv, parse)
        for tracer in tracers:
            with tracer:
                traced = run_workload(workload_argv, parse)
            after = run_workload(workload_argv, parse)
            ratios[tracer.name].append(traced / ((before + after) / 2))
            before = after
        print(f"  round {round_number + 1}/{rounds}: " +
              ", ".join(f"{name} {values[-1]:.3f}" for name, values in ratios.items()), file=sys.stderr)
    return ratios


def report_ratios(title, ratios):
    print(title)
    for name, values in ratios.items():
        print(f"  {name:<28} median {statistics.median(values):.3f}  "
              f"(min {min(values):.3f}, max {max(values):.3f}, {len(values)} rounds)")
