"""CPU time of processes from ``/proc``, for the benchmarks that measure servers running in
other processes (the collector's workers, PostgreSQL's backends): user + system seconds as
the kernel counts them, whatever the process does."""

from __future__ import annotations

import os

CLOCK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants still running."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLOCK
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return total
    return total + sum(tree_cpu(c) for c in children)
