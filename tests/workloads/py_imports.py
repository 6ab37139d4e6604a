"""Ground truth for Python code that runs only while a module is imported:
import_all() writes 40 modules and imports each once. Each module's body
spins for 50 ms at module level (its frame is `hot_module_N.py:<module>`)
and then the import is over: CPython frees a module's code object once its
body has run, and the code objects compiled next take its memory, so a
profiler has to read it while the import lasts.

usage: python3 py_imports.py SECONDS_BEFORE_START
"""
import importlib
import os
import sys
import tempfile
import time

BODY = """\
import time
_end = time.monotonic() + 0.05
_total = 0
while time.monotonic() < _end:
    for _i in range(1000):
        _total += _i
"""


def import_all(directory, count):
    kept = []
    for index in range(count):
        importlib.import_module(f"hot_module_{index}")
        del sys.modules[f"hot_module_{index}"]
        # New code objects of the same size take the freed ones' memory,
        # as the next imports of a real program do.
        kept.append([compile(BODY.replace("_total", f"_t{k}"), f"reuse_{index}_{k}.py", "exec")
                     for k in range(20)])


def main():
    time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)
    sys.dont_write_bytecode = True
    with tempfile.TemporaryDirectory() as directory:
        for index in range(40):
            with open(os.path.join(directory, f"hot_module_{index}.py"), "w") as module:
                module.write(BODY)
        sys.path.insert(0, directory)
        import_all(directory, 40)


main()
