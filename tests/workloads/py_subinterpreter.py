"""Ground truth for subinterpreters, which bpfscope does not walk: the main
thread burns in main_burn() while a second thread runs sub_burn() in a
subinterpreter, both for SECONDS. While the subinterpreter lives, every
sample must stay native: no Python frame, so none named from the wrong
interpreter's frames.

usage: python3.X py_subinterpreter.py SECONDS
"""
import sys
import threading
import time

try:
    import _interpreters as interpreters  # 3.13
except ImportError:
    import _xxsubinterpreters as interpreters  # 3.8 to 3.12

SUB_CODE = """
import time

def sub_burn(end):
    total = 0
    while time.monotonic() < end:
        total += 1

sub_burn(time.monotonic() + {seconds})
"""


def run_subinterpreter(seconds):
    interp = interpreters.create()
    interpreters.run_string(interp, SUB_CODE.format(seconds=seconds))
    interpreters.destroy(interp)


def main_burn(end):
    total = 0
    while time.monotonic() < end:
        total += 1


seconds = float(sys.argv[1])
thread = threading.Thread(target=run_subinterpreter, args=(seconds,))
thread.start()
main_burn(time.monotonic() + seconds)
thread.join()
