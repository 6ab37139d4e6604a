#!/usr/bin/env python3
"""Soak and idle cost of `bpfscope serve` (issues: serve, hardening).

  python3 bench/serve.py [--seconds S] [--idle-seconds S] [--half-open N] [--warmup S]

1. Idle: the agent's CPU (utime+stime from /proc) over --idle-seconds on an
   idle host, at the default --hz 19. Target <= 0.5 % of one core.
2. Soak: --seconds (600 for the 10-minute soak) with process churn, /metrics
   scraped every second, a 5 s flame-graph window every 10 s, and
   --half-open connections (default 1000) that each sent one byte of a
   request, reopened as the agent closes them, after --warmup seconds of the
   same load (default 330: the CPU history full, the symbolizer renewed
   once, so start and end sit at the same point of its 5-minute cycle).
   Prints RSS, threads, BPF map memory and the agent's CPU at the start and
   the end, and how many scrapes failed. Targets: threads bounded (the HTTP
   front runs on one thread), RSS growth <= 5 MB, CPU <= 0.5 % of a core
   (the churn's own profile windows included), no failed scrape.
"""
import argparse
import os
import resource
import select
import socket
import threading
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


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def bpf_map_mb(pid):
    """Kernel memory of the agent's BPF maps (memlock of each map descriptor)."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            info = open(f"/proc/{pid}/fdinfo/{fd}").read()
        except OSError:
            continue
        if "map_type:" in info:
            for line in info.splitlines():
                if line.startswith("memlock:"):
                    total += int(line.split()[1])
    return total / 2**20


class HalfOpen(threading.Thread):
    """Keeps `count` connections open that each sent one byte of a request."""

    def __init__(self, count):
        super().__init__(daemon=True)
        self.count, self.sockets, self.reopened, self.stopping = count, [], 0, False

    def open_one(self):
        try:
            sock = socket.create_connection(("127.0.0.1", PORT), timeout=5)
            sock.sendall(b"G")
            sock.setblocking(False)
            self.sockets.append(sock)
        except OSError:
            pass

    def run(self):
        while not self.stopping:
            while len(self.sockets) < self.count:
                self.open_one()
                self.reopened += 1
            readable, _, _ = select.select(self.sockets[:1000], [], [], 0.5) if self.sockets else ([], [], [])
            for sock in readable:
                sock.close()
                self.sockets.remove(sock)
            rest = self.sockets[1000:]
            if rest:
                readable, _, _ = select.select(rest, [], [], 0)
                for sock in readable:
                    sock.close()
                    self.sockets.remove(sock)

    def stop(self):
        self.stopping = True
        self.join()
        for sock in self.sockets:
            sock.close()


def snapshot(pid):
    return {"rss": rss_mb(pid), "anon": rss_mb(pid, "RssAnon:"), "threads": threads(pid),
            "maps": bpf_map_mb(pid), "cpu": cpu_seconds(pid), "at": time.monotonic()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--idle-seconds", type=int, default=60)
    parser.add_argument("--half-open", type=int, default=1000)
    # The CPU history fills for its first 5 min 20 s and the symbolizer starts
    # afresh every 5 min: growth is measured from the same point of both cycles.
    parser.add_argument("--warmup", type=int, default=330)
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    ensure_release_build()
    agent = subprocess.Popen([BPFSCOPE, "serve", "--listen", f"127.0.0.1:{PORT}"], stderr=subprocess.DEVNULL)
    time.sleep(2)
    fetch("/metrics")

    start_cpu = cpu_seconds(agent.pid)
    time.sleep(args.idle_seconds)
    idle = (cpu_seconds(agent.pid) - start_cpu) / args.idle_seconds * 100
    print(f"idle: agent CPU {idle:.3f} % of one core over {args.idle_seconds} s at --hz 19  target <= 0.5 %",
          flush=True)

    short = build_workload("short_burn", "tests/workloads")
    churn = subprocess.Popen(["sh", "-c", f"while :; do {short} 5; done"])
    half_open = HalfOpen(args.half_open)
    half_open.start()
    # Warm-up with the same load: symbol tables loaded once and the history
    # filling are not growth.
    warmup_end = time.monotonic() + args.warmup
    fetch("/flamegraph.svg?seconds=5")
    while time.monotonic() < warmup_end:
        fetch("/metrics")
        if int(warmup_end - time.monotonic()) % 10 == 0:
            fetch("/flamegraph.svg?seconds=5")
        time.sleep(1)
    start = snapshot(agent.pid)
    windows_done = []

    def windows():
        while time.monotonic() - start["at"] < args.seconds - 10:
            fetch("/flamegraph.svg?seconds=5")
            windows_done.append(1)
            time.sleep(5)

    window_thread = threading.Thread(target=windows, daemon=True)
    window_thread.start()
    scrapes = failed = 0
    max_threads = start["threads"]
    next_report = start["at"] + 60
    rss_seen = [start["rss"]]
    while time.monotonic() - start["at"] < args.seconds:
        if time.monotonic() >= next_report:
            rss_seen.append(rss_mb(agent.pid))
            print(f"  at {next_report - start['at']:4.0f} s: RSS {rss_seen[-1]:.1f} MB "
                  f"(anonymous {rss_mb(agent.pid, 'RssAnon:'):.1f}), {threads(agent.pid)} threads", flush=True)
            next_report += 60
        try:
            fetch("/metrics")
        except OSError:
            failed += 1
        scrapes += 1
        max_threads = max(max_threads, threads(agent.pid))
        time.sleep(1)
    end = snapshot(agent.pid)
    window_thread.join()
    half_open.stop()
    churn.kill()
    churn.wait()
    agent.terminate()
    agent.wait()
    busy = (end["cpu"] - start["cpu"]) / (end["at"] - start["at"]) * 100
    print(f"soak {args.seconds} s: process churn, a scrape a second, a 5 s window every 10 s "
          f"({len(windows_done)} windows), {args.half_open} half-open connections "
          f"({half_open.reopened} opened in all)")
    print(f"  RSS      {start['rss']:6.1f} MB -> {end['rss']:6.1f} MB ({end['rss'] - start['rss']:+.1f} MB, target <= +5 MB; "
          f"anonymous {start['anon']:.1f} -> {end['anon']:.1f} MB; between {min(rss_seen):.1f} and "
          f"{max(rss_seen):.1f} MB at the minutes)")
    print(f"  threads  {start['threads']:6d}    -> {end['threads']:6d}    (at most {max_threads} seen)")
    print(f"  BPF maps {start['maps']:6.1f} MB -> {end['maps']:6.1f} MB")
    print(f"  CPU      {busy:.2f} % of one core over the soak (target <= 0.5 %)")
    print(f"  scrapes  {scrapes - failed} of {scrapes} answered")


if __name__ == "__main__":
    sys.exit(main())
