"""Ground truth for per-thread Python stacks: thread "a" runs only
burn_in_a and thread "b" only burn_in_b, each for SECONDS. Prints each
thread's kernel TID ("a TID", "b TID") once both run.

usage: python3.X py_threads.py SECONDS
"""
import queue
import sys
import threading
import time


def spin_until(end):
    total = 0
    while time.monotonic() < end:
        for i in range(2000):
            total += i
    return total


def burn_in_a(end):
    return spin_until(end)


def burn_in_b(end):
    return spin_until(end)


def run(name, target, end, started):
    started.put((name, threading.get_native_id()))
    target(end)


seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
end = time.monotonic() + seconds
started = queue.Queue()
threads = [
    threading.Thread(target=run, args=("a", burn_in_a, end, started)),
    threading.Thread(target=run, args=("b", burn_in_b, end, started)),
]
for thread in threads:
    thread.start()
for _ in threads:
    name, tid = started.get()
    print(name, tid, flush=True)
for thread in threads:
    thread.join()
