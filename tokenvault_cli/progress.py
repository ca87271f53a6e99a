"""A progress bar on stderr for long runs (shown only in a terminal), which also tells rate-limit waits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from tokenvault_client import RateLimited, VaultClientError

stderr = Console(stderr=True)


@dataclass
class Tracker:
    """Advance with `done(n)`; `waiting(error, seconds)` is the vault client's on_wait."""

    progress: Progress | None = None
    task: TaskID | None = None
    label: str = ""
    waits: int = 0
    waited: float = 0.0

    def done(self, count: int) -> None:
        """`count` more items finished."""
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=count, description=self.label)

    def waiting(self, error: VaultClientError, seconds: float) -> None:
        """The client waits `seconds` because of `error`."""
        self.waits += 1
        self.waited += seconds
        if self.progress is not None and self.task is not None:
            why = "rate limit" if isinstance(error, RateLimited) else error.code.name
            self.progress.update(self.task, description=f"{self.label} (waiting {seconds:.1f} s: {why})")


@contextmanager
def tracked(label: str, total: int, show_from: int = 1) -> Iterator[Tracker]:
    """A tracker whose bar is drawn when stderr is a terminal and `total` >= `show_from`."""
    if not stderr.is_terminal or total < show_from:
        yield Tracker(label=label)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=True) as progress:
        yield Tracker(progress, progress.add_task(label, total=total), label)
