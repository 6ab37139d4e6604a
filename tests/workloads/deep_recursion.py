"""Ground truth for deep interpreter stacks: descend() calls itself DEPTH
times, then burn() spins, so every sample in burn has DEPTH descend frames
under it (with -X perf, about four native frames each).

usage: python3.12 -X perf deep_recursion.py DEPTH SECONDS
"""
import sys
import time


def burn(end):
    total = 0
    while time.time() < end:
        for i in range(10000):
            total += i
    return total


def descend(depth, end):
    if depth > 1:
        return descend(depth - 1, end) + 1
    return burn(end)


sys.setrecursionlimit(10000)
descend(int(sys.argv[1]), time.time() + float(sys.argv[2]))
