"""How many bytes of values each statement's result brings into the process: a pool wrapper that measures them.

libpq holds a statement's whole result in memory before psycopg hands back a row, so the bytes
of its values (every cell's value, as libpq holds it) are what one read costs the process, whatever
Python keeps afterwards. `MeasuredPool` wraps a psycopg pool: every cursor of its connections
records the bytes of each result it receives, with the statement's first words, in `results`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool


def result_bytes(cursor: psycopg.Cursor[Any]) -> int:
    """The bytes of the values of the cursor's current result (0 without one)."""
    result = cursor.pgresult
    if result is None:
        return 0
    cells = (result.get_value(row, column) for row in range(result.ntuples) for column in range(result.nfields))
    return sum(len(value) for value in cells if value is not None)


class MeasuredPool:
    """A pool whose connections' cursors record (statement start, bytes of its result) in `results`."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self.results: list[tuple[str, int]] = []

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the wrapped pool whose cursors measure what they receive."""
        results = self.results

        class _MeasuringCursor(psycopg.Cursor):
            def execute(self, query: Any, params: Any = None, **kwargs: Any) -> _MeasuringCursor:
                super().execute(query, params, **kwargs)
                results.append((str(query)[:40], result_bytes(self)))
                return self

        with self._pool.connection() as conn:
            factory = conn.cursor_factory
            conn.cursor_factory = _MeasuringCursor
            try:
                yield conn
            finally:
                conn.cursor_factory = factory

    def largest(self, starting: str = "") -> int:
        """The most bytes one result brought in, among statements starting with `starting`."""
        return max((size for query, size in self.results if query.startswith(starting)), default=0)
