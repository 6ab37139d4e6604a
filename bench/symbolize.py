#!/usr/bin/env python3
"""Symbolization cost of a system-wide profile (issue: stacks in containers).

  python3 bench/symbolize.py [--seconds S] [--binaries N]

Runs N stripped binaries (each its own build, its debug file served by
Debian's debuginfod in a network namespace of its own, on loopback) and N
unstripped ones, then a S-second system-wide `profile -F 99` four ways:
cold and warm caches (the unwind cache and the debuginfod cache), each with
and without debuginfod. For each: the time from the end of collection to
the written profile as bpfscope reports it (the debuginfod wait, then
symbolization), peak RSS, and the share of the stripped binaries' samples
that are named. The peer is `perf report` on a `perf record -a -g -F 99`
of the same length, taken right after: its wall time and peak RSS.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from common import BPFSCOPE, ROOT, ensure_release_build

NAMESPACE = "bpfscope-bench-dbg"
PORT = 8002


def netns(*argv):
    return ["ip", "netns", "exec", NAMESPACE, *argv]


def build_binaries(directory, count):
    """count stripped binaries with their debug files in directory/served,
    and count unstripped ones; each a distinct build (distinct build IDs)."""
    served = os.path.join(directory, "served")
    os.makedirs(served)
    source = os.path.join(ROOT, "tests/workloads/cpu_split.c")
    stripped, plain = [], []
    for index in range(2 * count):
        binary = os.path.join(directory, f"split{index:02d}")
        subprocess.run(["clang", "-O2", "-g", "-fno-omit-frame-pointer", "-fno-optimize-sibling-calls",
                        f"-Wl,--build-id=0x{index + 1:040x}", "-o", binary, source], check=True)
        if index < count:
            debug = os.path.join(served, f"split{index:02d}.debug")
            subprocess.run(["objcopy", "--only-keep-debug", binary, debug], check=True)
            subprocess.run(["strip", "-s", binary], check=True)
            stripped.append(binary)
        else:
            plain.append(binary)
    return served, stripped, plain


def start_debuginfod(served, directory, last_build_id):
    subprocess.run(["ip", "netns", "del", NAMESPACE], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    subprocess.run(netns("ip", "link", "set", "lo", "up"), check=True)
    server = subprocess.Popen(netns("debuginfod", "-F", "-p", str(PORT), "-t", "0", "-g", "0", "-d",
                                    os.path.join(directory, "db.sqlite"), served),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{PORT}/buildid/{last_build_id}/debuginfo"
    for _ in range(300):
        code = subprocess.run(netns("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url),
                              capture_output=True, text=True).stdout
        if code == "200":
            return server
        time.sleep(0.1)
    server.kill()
    raise RuntimeError("debuginfod never served the last debug file")


def run_measured(argv, env=None):
    """(stdout, stderr, peak RSS in MB, wall seconds) of a command (its own
    rusage: `ip netns exec` execs the command in the same process)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.monotonic()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        out_text, err_text = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {err_text}")
    return out_text, err_text, usage.ru_maxrss / 1024, wall


def named_share(folded, stripped):
    names = {os.path.basename(path)[:15] for path in stripped}
    named = total = 0
    for line in folded.splitlines():
        stack, count = line.rsplit(" ", 1)
        frames = stack.split(";")
        if frames[0] in names:
            total += int(count)
            if "run_workload" in frames:
                named += int(count)
    return named / total if total else 0.0


def bpfscope_run(seconds, caches, debuginfod, stripped):
    env = dict(os.environ, BPFSCOPE_CACHE_DIR=os.path.join(caches, "unwind"),
               DEBUGINFOD_CACHE_PATH=os.path.join(caches, "debuginfod"))
    url = f"http://127.0.0.1:{PORT}" if debuginfod else ""
    argv = netns(BPFSCOPE, "profile", "-F", "99", "--debuginfod", url, str(seconds))
    out, err, rss, _ = run_measured(argv, env)
    symbolized = int(re.search(r"symbolized in (\d+) ms", err).group(1))
    waited = re.search(r"waited (\d+) ms after collection", err)
    waited = int(waited.group(1)) if waited else 0
    return waited, symbolized, rss, named_share(out, stripped), err


def perf_run(seconds, directory):
    data = os.path.join(directory, "perf.data")
    subprocess.run(["perf", "record", "-a", "-g", "-F", "99", "-o", data, "--", "sleep", str(seconds)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, rss, wall = run_measured(["perf", "report", "--stdio", "-i", data])
    return wall, rss


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--binaries", type=int, default=8)
    args = parser.parse_args()
    ensure_release_build()
    directory = tempfile.mkdtemp(prefix="bpfscope-bench-symbolize-")
    workloads = []
    server = None
    try:
        served, stripped, plain = build_binaries(directory, args.binaries)
        server = start_debuginfod(served, directory, f"{len(stripped):040x}")
        # Long enough for every run below.
        run_for = str(8 * (args.seconds + 15))
        workloads = [subprocess.Popen([path, run_for], stdout=subprocess.DEVNULL)
                     for path in stripped + plain]
        time.sleep(0.5)
        print(f"{args.seconds} s system-wide at 99 Hz, {len(stripped)} stripped and {len(plain)} "
              f"unstripped binaries running ({os.cpu_count()} CPUs)")
        results = []
        print(f"{'configuration':<34} {'debuginfod wait':>16} {'symbolize':>10} {'peak RSS':>9} "
              f"{'stripped named':>15}")
        for debuginfod in (False, True):
            caches = os.path.join(directory, f"caches-{int(debuginfod)}")
            for warmth in ("cold", "warm"):
                waited, symbolized, rss, share, err = bpfscope_run(args.seconds, caches, debuginfod,
                                                                    stripped)
                rss_text = f"{rss:.1f} MB"
                name = f"bpfscope, {warmth} caches, " + ("debuginfod" if debuginfod else "no debuginfod")
                print(f"{name:<34} {waited:>13} ms {symbolized:>7} ms {rss_text:>9} {share:>14.1%}")
                results.append((name, waited + symbolized, rss))
                if share == 0.0 and debuginfod:
                    print(err, file=sys.stderr)
        wall, rss = perf_run(args.seconds, directory)
        rss_text = f"{rss:.1f} MB"
        print(f"{'perf report --stdio (peer)':<34} {'':>16} {wall * 1000:>7.0f} ms {rss_text:>9}")
        for name, milliseconds, peak in results:
            print(f"  {name}: time to output ÷ perf report {milliseconds / (wall * 1000):.2f}, "
                  f"peak RSS ÷ perf report's {peak / rss:.2f}")
    finally:
        for workload in workloads:
            workload.kill()
            workload.wait()
        if server:
            server.kill()
            server.wait()
        subprocess.run(["ip", "netns", "del", NAMESPACE], stderr=subprocess.DEVNULL)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
