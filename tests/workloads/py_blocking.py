"""Ground truth for Python off-CPU profiles: on the main thread, waiter()
blocks in time.sleep for 3 of every 4 units of blocked time, and reader()
in a socket read for 1: it asks a helper thread, which answers one unit
later.

usage: python3.X py_blocking.py SECONDS
"""
import socket
import sys
import threading
import time

UNIT = 0.02


def waiter():
    time.sleep(3 * UNIT)


def reader(conn):
    conn.send(b"?")
    conn.recv(1)


def answerer(conn):
    while conn.recv(1):
        time.sleep(UNIT)
        conn.send(b"x")


def driver(seconds):
    left, right = socket.socketpair()
    threading.Thread(target=answerer, args=(right,), daemon=True).start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        waiter()
        reader(left)


driver(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
