"""What the Python parts of the benchmark scripts share (bench-archive.sh, bench-convert.sh):
they run from the checkout, started with `python -B` (no scripts/__pycache__), and import it
with `sys.path.insert(0, "scripts")`. Standard library only."""

import os
import subprocess
import sys
import time


def timed(argv, cwd=None):
    """(seconds, peak RSS MiB) of one process run to its end (ru_maxrss from wait4); when it
    fails, the benchmark ends with the last 2,000 characters of its stderr."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{argv} failed: {p.stderr.read().decode()[-2000:]}")
    return dt, ru.ru_maxrss / 1024.0
