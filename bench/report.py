"""What both benchmarks share: running work on several threads at once, and printing figures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

Figures = dict[str, tuple[float, str]]
"""Figure name -> (value, unit)."""


def parallel(clients: int, work: Callable[[int], None]) -> float:
    """Run work(i) on `clients` threads at once; the wall-clock seconds."""
    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        try:
            work(index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def print_figures(console: Console, title: str, figures: Figures, value_header: str = "value") -> None:
    """A table for people, then one `figure: <name> <value> <unit>` line per figure."""
    table = Table("figure", value_header, "unit", title=title)
    for name, (value, unit) in figures.items():
        table.add_row(name, f"{value:,.2f}", unit)
    console.print(table)
    for name, (value, unit) in figures.items():
        print(f"figure: {name} {value:.2f} {unit}")
