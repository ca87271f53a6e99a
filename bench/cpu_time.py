"""CPU seconds spent by a process or a process tree, read from /proc (Linux).

Throughput on a shared 2-core machine moves with whatever else runs; the CPU a component
spends per item barely does, so benchmarks report both.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name sits in parentheses and may hold spaces: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def process_cpu_seconds(pid: int, with_reaped_children: bool = False) -> float:
    """User + system CPU of `pid` (and of its children it has waited for, if asked)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def tree_cpu_seconds(root: int) -> float:
    """CPU of `root`, its live children and the children it has reaped (a server and its workers)."""
    total = process_cpu_seconds(root, with_reaped_children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == root:
                total += process_cpu_seconds(int(entry.name), with_reaped_children=True)
    return total
