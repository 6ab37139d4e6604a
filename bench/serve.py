#!/usr/bin/env python3
"""Soak and idle cost of `bpfscope serve` (issue: serve).

  python3 bench/serve.py [--seconds S] [--idle-seconds S]

1. Idle: the agent's CPU (utime+stime from /proc) over --idle-seconds on an
   idle host, at the default --hz 19. Target <= 0.5 % of one core.
2. Soak: --seconds (600 for the 10-minute soak) with a process-churn workload,
   /metrics scraped every 5 s and a 5 s flame-graph window every 30 s; RSS at
   start (after one warm-up window) and end (target: growth <= 10 %) and the
   agent's CPU.
"""
import argparse
import os
import subprocess
import sys
import time
import urllib.request

from common import BPFSCOPE, build_workload, ensure_release_build

PORT = 19499


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid, field="VmRSS:"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def fetch(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=60) as response:
        return response.read()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--idle-seconds", type=int, default=60)
    args = parser.parse_args()
    ensure_release_build()
    agent = subprocess.Popen([BPFSCOPE, "serve", "--listen", f"127.0.0.1:{PORT}"], stderr=subprocess.DEVNULL)
    time.sleep(2)
    fetch("/metrics")

    start_cpu = cpu_seconds(agent.pid)
    time.sleep(args.idle_seconds)
    idle = (cpu_seconds(agent.pid) - start_cpu) / args.idle_seconds * 100
    print(f"idle: agent CPU {idle:.3f} % of one core over {args.idle_seconds} s at --hz 19  target <= 0.5 %")

    short = build_workload("short_burn", "tests/workloads")
    churn = subprocess.Popen(["sh", "-c", f"while :; do {short} 5; done"])
    # One window first: symbol tables loaded once are not growth.
    fetch("/flamegraph.svg?seconds=5")
    start_rss, start_cpu, started = rss_mb(agent.pid), cpu_seconds(agent.pid), time.monotonic()
    start_anon = rss_mb(agent.pid, "RssAnon:")
    next_window = started
    while time.monotonic() - started < args.seconds:
        fetch("/metrics")
        if time.monotonic() >= next_window:
            fetch("/flamegraph.svg?seconds=5")
            next_window += 30
        time.sleep(5)
    end_rss, end_anon = rss_mb(agent.pid), rss_mb(agent.pid, "RssAnon:")
    busy = (cpu_seconds(agent.pid) - start_cpu) / (time.monotonic() - started) * 100
    churn.kill()
    churn.wait()
    agent.terminate()
    agent.wait()
    growth = (end_rss - start_rss) / start_rss * 100
    print(f"soak {args.seconds} s with process churn: RSS {start_rss:.1f} MB -> {end_rss:.1f} MB "
          f"({growth:+.1f} %, target <= +10 %; of which anonymous {start_anon:.1f} -> {end_anon:.1f} MB), "
          f"agent CPU {busy:.2f} % of one core")


if __name__ == "__main__":
    sys.exit(main())
