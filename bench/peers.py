#!/usr/bin/env python3
"""Stack truth beside perf and py-spy on two real programs nobody here wrote.

  python3 bench/peers.py [--seconds 8]

- PostgreSQL 15 (Debian's build: no frame pointers) under pgbench, in a
  private cluster on a Unix socket: `bpfscope profile` and `perf record
  --call-graph dwarf` sample the cluster's processes at 99 Hz, in turn, for
  the same length. For each: the share of frames that are named, and the
  share of stacks that reach `main`.
- black (mypyc-compiled, from PyPI) formatting 18,000 lines under CPython
  3.11 (with its one worker process), once under `bpfscope profile -- CMD`
  and once under `py-spy record --subprocesses -- CMD`. Python frames only,
  since py-spy shows no native ones: the share that are named, and the
  share of stacks whose outermost Python frame is a module's body or a
  thread's bootstrap (the whole Python stack).
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from common import BPFSCOPE, ROOT, ensure_release_build
from python import find_py_spy

PG_BIN = "/usr/lib/postgresql/15/bin"
UNNAMED = ("[unknown", "[native callers unknown]", "[unknown python]", "[missed")


def shares(stacks, reaches):
    """(named frame share, share of samples whose stack satisfies `reaches`)
    of [(frames, count)]."""
    frames = sum(len(f) * n for f, n in stacks)
    named = sum(sum(1 for x in f if not x.startswith(UNNAMED)) * n for f, n in stacks)
    samples = sum(n for _, n in stacks)
    reached = sum(n for f, n in stacks if reaches(f))
    return named / max(frames, 1), reached / max(samples, 1), samples


def folded(text, skip_first=True):
    """[(frames, count)] of folded lines, the comm frame dropped."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        stacks.append((frames[1:] if skip_first else frames, int(count)))
    return stacks


def perf_script_stacks(data):
    """[(frames, 1)] per sample of a perf.data, user frames only, root first."""
    text = subprocess.run(["perf", "script", "-i", data, "-F", "comm,ip,sym,dso"], capture_output=True,
                          text=True).stdout
    stacks = []
    for block in text.split("\n\n"):
        frames = []
        for line in block.splitlines()[1:]:
            parts = line.strip().split(None, 1)
            if len(parts) < 2 or "[kernel.kallsyms]" in parts[1]:
                continue
            symbol = parts[1].rsplit(" (", 1)[0]
            frames.append("[unknown]" if symbol.startswith("[unknown]") else symbol.split("+")[0])
        if frames:
            stacks.append((frames[::-1], 1))
    return stacks


class Cluster:
    """A private PostgreSQL 15 cluster on a Unix socket, as postgres."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bpfscope-pg-")
        shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")

    def as_postgres(self, *argv, **kw):
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, **kw)

    def __enter__(self):
        self.as_postgres(f"{PG_BIN}/initdb", "-D", self.data, stdout=subprocess.DEVNULL)
        self.as_postgres(f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w",
                         "-o", f"-k {self.dir} -c listen_addresses=''", "start", stdout=subprocess.DEVNULL)
        self.as_postgres("pgbench", "-h", self.dir, "-i", "-s", "5", "postgres", stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        return self

    def postmaster(self):
        with open(os.path.join(self.data, "postmaster.pid")) as pidfile:
            return int(pidfile.readline())

    def load(self, seconds):
        return subprocess.Popen(["runuser", "-u", "postgres", "--", "pgbench", "-h", self.dir, "-c", "4",
                                 "-T", str(seconds), "postgres"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def __exit__(self, *exc):
        self.as_postgres(f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "fast", "stop", stdout=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


def postgres(seconds):
    reaches_main = lambda frames: "main" in frames
    rows = []
    with Cluster() as cluster:
        load = cluster.load(2 * seconds + 10)
        time.sleep(2)
        # The cluster's processes, the backends serving pgbench included.
        pids = ",".join(p for p in os.listdir("/proc") if p.isdigit() and _is_postgres(p))
        ours = subprocess.run([BPFSCOPE, "profile", "-F", "99", "-p", pids, str(seconds)], capture_output=True,
                              text=True)
        rows.append(("bpfscope profile -p PIDS", shares(folded(ours.stdout), reaches_main)))
        data = os.path.join(cluster.dir, "perf.data")
        subprocess.run(["perf", "record", "-q", "-F", "99", "--call-graph", "dwarf", "-o", data, "-p", pids,
                        "--", "sleep", str(seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows.append(("perf record --call-graph dwarf -p PIDS", shares(perf_script_stacks(data), reaches_main)))
        load.kill()
        load.wait()
    return rows


def _is_postgres(pid):
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip() == "postgres"
    except OSError:
        return False


def black_command():
    """black 24.10 (mypyc-compiled) in a CPython 3.11 venv under target/bench,
    installed from PyPI the first time."""
    venv = os.path.join(ROOT, "target", "bench", "black-venv")
    python = glob.glob(os.path.expanduser("~/.pyenv/versions/3.11.*/bin/python3.11"))[-1]
    if not os.path.exists(os.path.join(venv, "bin", "black")):
        subprocess.run([python, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--quiet", "black==24.10.0"], check=True)
    return os.path.join(venv, "bin", "black")


def black():
    sources = tempfile.mkdtemp(prefix="bpfscope-black-")
    lines = []
    for path in sorted(glob.glob("/usr/lib/python3.11/*.py")):
        with open(path) as source:
            lines.extend(source.readlines())
    for index in range(6):
        with open(os.path.join(sources, f"f{index}.py"), "w") as out:
            out.writelines(lines[:3000])
    command = [black_command(), "--check", "-q", "-W", "1", sources]
    ours = subprocess.run([BPFSCOPE, "profile", "-F", "99", "--", *command], capture_output=True, text=True)
    raw = os.path.join(sources, "py-spy.txt")
    subprocess.run([find_py_spy(), "record", "-r", "99", "--subprocesses", "-f", "raw", "-o", raw, "--",
                    *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(raw) as text:
        theirs = folded(text.read(), skip_first=False)
    shutil.rmtree(sources, ignore_errors=True)
    # Python frames only (py-spy shows no native ones): bpfscope's are
    # FILE:FUNCTION, py-spy's FUNCTION (FILE:LINE) under its process frames.
    ours_python = [([f for f in frames if is_bpfscope_python(f)], n) for frames, n in folded(ours.stdout)]
    theirs_python = [([f.split(" (")[0] for f in frames if not f.startswith("process ")], n)
                     for frames, n in theirs]
    ours_python = [([f.rsplit(":", 1)[-1] if f != "[unknown python]" else f for f in frames], n)
                   for frames, n in ours_python if frames]
    rooted = lambda frames: bool(frames) and (frames[0] == "<module>" or frames[0].endswith("_bootstrap"))
    return [("bpfscope profile -- black", shares(ours_python, rooted)),
            ("py-spy record --subprocesses -- black", shares(theirs_python, rooted))]


def is_bpfscope_python(frame):
    """Whether a bpfscope frame is a Python one (FILE:FUNCTION)."""
    return frame == "[unknown python]" or (":" in frame and "::" not in frame and not frame.endswith("_[k]"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    ensure_release_build()
    print("| program | profiler | samples | named frames | stacks reaching main (PostgreSQL) or their outermost Python frame (black) |")
    print("|---|---|---|---|---|")
    for program, rows in (("PostgreSQL 15 under pgbench", postgres(args.seconds)),
                          ("black on 18,000 lines, CPython 3.11", black())):
        for profiler, (named, reached, samples) in rows:
            print(f"| {program} | `{profiler}` | {samples} | {named * 100:.1f} % | {reached * 100:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
