"""CPU seconds spent by a process or a process tree, read from /proc (Linux).

Throughput on a shared 2-core machine moves with whatever else runs; the CPU a component
spends per item barely does, so benchmarks report both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import psycopg

from devstack.postgres import postmaster_pid

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


class ServerUsage(NamedTuple):
    """What a server's processes spent, read in one pass over /proc."""

    session_seconds: float
    """CPU of its sessions whose title holds the marker."""
    rest_seconds: float
    """CPU of the rest: for PostgreSQL its background work (checkpointer, WAL writer,
    autovacuum), plus the postmaster and every child it has reaped."""
    session_faults: int
    """Minor page faults of its live sessions. A PostgreSQL backend faults each 4 kB page of
    the shared buffers it touches for the first time into its own page table (one fault per
    2 MB with huge pages)."""


def server_usage(root: int, client_marker: str) -> ServerUsage:
    """CPU and page faults of the children of `root`, split by whether their title holds `client_marker`."""
    sessions, faults = 0.0, 0
    rest = process_cpu_seconds(root, with_reaped_children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or int(fields[1]) != root:
            continue
        seconds = process_cpu_seconds(int(entry.name), with_reaped_children=True)
        try:
            title = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if client_marker in title:
            sessions += seconds
            faults += int(fields[7])  # minflt
        else:
            rest += seconds
    return ServerUsage(sessions, rest, faults)


class CostMeter:
    """WAL written and CPU spent by PostgreSQL and by the vault service, between two readings."""

    def __init__(self, admin: psycopg.Connection, vault_pid: int) -> None:
        self._admin = admin
        row = admin.execute("SHOW data_directory").fetchone()
        data_dir = Path(str(row[0] if row else ""))
        self._postmaster = postmaster_pid(data_dir)
        self.vault_pid = vault_pid

    def reading(self) -> tuple[int, float, float, float, int]:
        """WAL position (bytes); CPU seconds of the vault's Postgres sessions, of Postgres's background, of the
        service; the sessions' minor page faults."""
        row = self._admin.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
        wal = int(row[0]) if row else 0
        usage = server_usage(self._postmaster, "tokenvault_vault")
        vault = process_cpu_seconds(self.vault_pid)
        return wal, usage.session_seconds, usage.rest_seconds, vault, usage.session_faults

    def per_item(self, before: tuple[int, float, float, float, int], count: int) -> dict[str, float]:
        """WAL bytes, µs of each CPU (db_us: sessions and background work) and sessions' page faults per item
        since `before`; sessions that ended meanwhile take their faults with them."""
        wal, sessions, background, vault, faults = self.reading()
        return {
            "wal": (wal - before[0]) / count,
            "db_us": (sessions - before[1] + background - before[2]) * 1e6 / count,
            "db_background_us": (background - before[2]) * 1e6 / count,
            "vault_us": (vault - before[3]) * 1e6 / count,
            "db_faults": max(0, faults - before[4]) / count,
        }
