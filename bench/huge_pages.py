"""The benchmarks' `--huge-pages` option, and the figure that says what Postgres actually ran on.

Production reserves huge pages for the vault's database (docs/scaling.md); the benchmarks
measure it that way by default, reserving them for their own cluster while it runs (as root:
devstack/hugepages.py). `--huge-pages off` measures the same on 4 kB pages, the peer that shows
what the reservation is worth. Either way the figure `postgres_huge_pages_mb` reports how much
of Postgres's shared memory was in huge pages, so a run that could not reserve them says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from bench.report import Figures
from devstack.hugepages import huge_page_bytes
from devstack.postgres import postmaster_pid
from devstack.stack import TemporaryStack


def add_huge_pages_option(parser: argparse.ArgumentParser) -> None:
    """`--huge-pages reserve|off` (default reserve)."""
    parser.add_argument(
        "--huge-pages",
        choices=("reserve", "off"),
        default="reserve",
        help="reserve huge pages for Postgres's shared memory as production does (root only), or measure without",
    )


def huge_pages_figure(stack: TemporaryStack, console: Console) -> Figures:
    """MiB of the stack's Postgres shared memory in huge pages; a warning when none could be reserved."""
    mib = huge_page_bytes(postmaster_pid(Path(stack.state.postgres["data_dir"]))) / 2**20
    if mib == 0 and int(stack.state.postgres.get("huge_pages_reserved", "0")) == 0:
        console.print(
            "[yellow]Postgres runs on 4 kB pages (huge pages not reserved: --huge-pages off, not root, "
            "or no free memory); the figures at millions of tokens are then those of docs/scaling.md's "
            "'without huge pages' column.[/yellow]"
        )
    return {"postgres_huge_pages_mb": (mib, "MiB")}
