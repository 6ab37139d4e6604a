"""Ground truth for a C extension under Python: compress_loop() calls
zlib.compress on a 4 MiB buffer again and again, so most samples are in
zlib's native code called from that Python function.

usage: python3.X py_zlib.py SECONDS
"""
import random
import sys
import time
import zlib


def compress_loop(seconds):
    rng = random.Random(1)
    data = bytes(rng.getrandbits(8) % 16 for _ in range(4 << 20))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        zlib.compress(data, 9)


compress_loop(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
