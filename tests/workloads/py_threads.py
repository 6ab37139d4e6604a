"""Ground truth for per-thread Python stacks: thread "a" runs only
burn_in_a and thread "b" only burn_in_b, each for SECONDS. Prints each
thread's kernel TID ("a TID", "b TID") once both run.

usage: python3.X py_threads.py SECONDS
"""
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


def run(name, target, end, ready):
    print(name, threading.get_native_id(), flush=True)
    ready.release()
    target(end)


seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
end = time.monotonic() + seconds
ready = threading.Semaphore(0)
threads = [
    threading.Thread(target=run, args=("a", burn_in_a, end, ready)),
    threading.Thread(target=run, args=("b", burn_in_b, end, ready)),
]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
