"""The Python benchmark's workload: burn_three and burn_one rounds (3:1 CPU
split) for SECONDS; prints how many rounds finished after the first second
(the profiler attaches during it).

usage: python3.X py_rounds.py SECONDS
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
    counted = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        burn_three(2)
        burn_one(2)
        if now >= start + 1:
            counted += 1
    return counted


print(driver(float(sys.argv[1]) if len(sys.argv) > 1 else 7.0))
