"""Ground truth for JIT profiles: driver() alternates burn_three (3 units of
work per round) and burn_one (1 unit), both through spin(), in rounds of
varying length, so on-CPU time splits 3:1 between them. Prints the units of
work finished after its first second (a profiler attaches during it), which
bench/python.py takes as throughput.

usage: python3.12 -X perf split.py SECONDS
"""
import sys
import time

def spin(units):
    total = 0
    for i in range(units * 2000):
        total += i
    return total

def burn_three(units):
    return spin(3 * units)

def burn_one(units):
    return spin(units)

def driver(seconds):
    start = time.monotonic()
    end = start + seconds
    seed = 1
    finished = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        seed = (seed * 1103515245 + 12345) & 0x7fffffff
        units = 1 + seed % 8
        burn_three(units)
        burn_one(units)
        if now >= start + 1:
            finished += 4 * units
    return finished

print(driver(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0))
