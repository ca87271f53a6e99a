"""Huge pages for the vault's PostgreSQL: reserve the kernel's 2 MB pages that its shared memory needs.

PostgreSQL maps `shared_buffers` in huge pages when the kernel has enough of them reserved
(`huge_pages = try`, deploy/postgres/tokenvault.conf), and in 4 kB pages otherwise. On 4 kB
pages the random-key lookups of a 10-million-token vault cost Postgres about twice the CPU
they cost on huge pages, and more the larger the vault (docs/scaling.md, step 12). The
reservation is a host setting (`vm.nr_hugepages`), not a database one: production sets it
once on the database host; the benchmarks, and `make up` with TOKENVAULT_RESERVE_HUGE_PAGES=1,
reserve what their own cluster needs while it runs (as root) and give it back when it stops.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
"""The kernel's count of reserved huge pages (root may write it)."""


def pages_needed(bindir: Path, data_dir: Path, run_as: str | None) -> int:
    """Huge pages the stopped cluster in `data_dir` would map, as PostgreSQL itself computes them (PG >= 15).

    0 when PostgreSQL cannot use huge pages on this system.
    """
    args = [str(bindir / "postgres"), "-D", str(data_dir), "-C", "shared_memory_size_in_huge_pages"]
    command = ["runuser", "-u", run_as, "--", *args] if run_as else args
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        return max(0, int(result.stdout.strip()))
    except ValueError:
        return 0


def reserve(count: int, control: Path = NR_HUGEPAGES) -> int:
    """Add `count` huge pages to the kernel's reservation: `count`, or 0 when none were added.

    0 when the reservation cannot be changed (not root, a container without the right) or
    the kernel found free memory for only some of them: PostgreSQL maps its shared memory in
    huge pages whole or not at all, so a part would only take memory from everything else
    (it is given back at once).
    """
    if count <= 0:
        return 0
    try:
        before = int(control.read_text())
        control.write_text(f"{before + count}\n")
        added = int(control.read_text()) - before
    except (OSError, ValueError):
        return 0
    if added < count:
        release(added, control)
        return 0
    return count


def release(count: int, control: Path = NR_HUGEPAGES) -> None:
    """Give back `count` huge pages added by `reserve` (pages still mapped are freed when unmapped)."""
    if count <= 0:
        return
    try:
        current = int(control.read_text())
        control.write_text(f"{max(0, current - count)}\n")
    except (OSError, ValueError):
        pass  # nothing was reserved by us, or the right to change it is gone: nothing to undo


def huge_page_bytes(pid: int) -> int:
    """Bytes of process `pid`'s mappings backed by huge pages (its shared memory, for a postmaster)."""
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return 0
    total_kb = size_kb = 0
    for line in lines:  # each mapping: "Size: N kB", then later "KernelPageSize: N kB"
        if line.startswith("Size:"):
            size_kb = int(line.split()[1])
        elif line.startswith("KernelPageSize:") and int(line.split()[1]) > 4:
            total_kb += size_kb
    return total_kb * 1024
