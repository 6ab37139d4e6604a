#!/usr/bin/env python3
"""Do bpfscope's histogram tools agree with libbpf-tools on the same events?

  python3 bench/agreement.py

- syscount: both tools trace one process making 200000 getppid calls; the
  counts must agree within 5 %.
- runqlat: both tools trace the whole system at the same time for 5 s while
  4 CPU burners oversubscribe the CPUs; event totals, and the numbers of
  waits of 1 ms or more, must agree within 5 %.
- biolatency: both tools trace the whole system while 2000 O_DIRECT writes
  and an fsync go to the disk holding target/; I/O totals within 5 %.
"""
import os
import re
import subprocess
import sys
import time

from common import BPFSCOPE, build_workload, ensure_release_build


def histogram_total(text, at_least=0):
    """Events in the histogram's buckets starting at `at_least` or above."""
    return sum(int(m.group(2)) for m in re.finditer(r"(\d+)\s+->\s+\d+\s+:\s+(\d+)", text)
               if int(m.group(1)) >= at_least)


def agree(name, ours, theirs):
    difference = abs(ours - theirs) / max(theirs, 1)
    verdict = "agree" if difference <= 0.05 else "DISAGREE"
    print(f"{name}: bpfscope {ours}, libbpf-tools {theirs}: {difference * 100:.2f} % apart ({verdict})")
    return difference <= 0.05


def syscount():
    target = subprocess.Popen([build_workload("getppid_n", "tests/workloads"), "200000", "1500"])
    time.sleep(0.2)
    theirs = subprocess.Popen(["/usr/sbin/syscount", "-p", str(target.pid), "-d", "4"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ours = subprocess.Popen([BPFSCOPE, "syscount", "-p", str(target.pid)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    ours_text, theirs_text = ours.communicate()[0], theirs.communicate()[0]
    target.wait()
    count = lambda text: int(re.search(r"^getppid\s+(\d+)", text, re.M).group(1))
    return agree("syscount getppid calls", count(ours_text), count(theirs_text))


def runqlat():
    spin = build_workload("spin")
    burners = [subprocess.Popen([spin, "8"], stdout=subprocess.DEVNULL) for _ in range(4)]
    theirs = subprocess.Popen(["/usr/sbin/runqlat", "5", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    ours = subprocess.Popen([BPFSCOPE, "runqlat", "5", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    ours_text, theirs_text = ours.communicate()[0], theirs.communicate()[0]
    for burner in burners:
        burner.kill()
        burner.wait()
    events = agree("runqlat events in 5 s", histogram_total(ours_text), histogram_total(theirs_text))
    slow = agree("runqlat waits of 1 ms or more", histogram_total(ours_text, 1024),
                 histogram_total(theirs_text, 1024))
    return events and slow


def biolatency():
    writer = build_workload("direct_writes", "tests/workloads")
    theirs = subprocess.Popen(["/usr/sbin/biolatency", "4", "1"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    ours = subprocess.Popen([BPFSCOPE, "biolatency", "4", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    time.sleep(1.5)
    subprocess.run([writer, "2000", os.path.dirname(writer)], check=True)
    ours_text, theirs_text = ours.communicate()[0], theirs.communicate()[0]
    return agree("biolatency I/Os in 4 s", histogram_total(ours_text), histogram_total(theirs_text))


def main():
    ensure_release_build()
    results = [syscount(), runqlat(), biolatency()]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
