"""The hot path's statements as libpq prepared statements, past psycopg's per-execute layers.

Each single-token Detokenize runs two statements: its fetch and its audit append. Through
`conn.execute` one cost the service ~75 µs of CPU and ~140 µs of wall time on the 2-core
benchmark VM, against ~20 µs and ~55 µs through libpq's own blocking call (which waits with
the GIL released) on a statement prepared once per connection; the round trips and system
calls are the same (one send, one poll, one receive), the difference is psycopg's Python
steps per execute (cursor, query conversion, prepare bookkeeping, result set-up, commit check).

What psycopg gives its callers is kept: parameters travel as text and are cast by the statement,
rows come back through psycopg's own loaders (its Transformer, in C), and a failed statement
raises the exception class psycopg would raise, so `translated` and the pool see no difference.
Only for single statements on an idle autocommit connection (the pool's connections).
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence
from typing import Any, cast

import psycopg
from psycopg import pq
from psycopg.adapt import Transformer
from psycopg.errors import error_from_result

_UNKNOWN_STATEMENT = b"26000"  # invalid_sql_statement_name: not prepared on this connection (yet)
_STALE_PLAN = b"0A000"  # "cached plan must not change result type": a migration changed a column since
_PREPARE_AGAIN = (_UNKNOWN_STATEMENT, _STALE_PLAN)
_ALREADY_PREPARED = b"42P05"  # duplicate_prepared_statement: the server connection has it (a pooling proxy's)

_PREPARED_ON: weakref.WeakKeyDictionary[psycopg.Connection[Any], set[bytes]] = weakref.WeakKeyDictionary()
"""The statement names prepared on each connection (weak: a connection the pool drops takes its entry along)."""


class PreparedStatement:
    """One SQL statement with `$n` parameters, prepared on each connection before it first runs there.

    The names prepared on each connection are remembered (`_PREPARED_ON`), so a connection's
    first run does not fail first: tried unprepared, it made Postgres log `ERROR: prepared
    statement "tv_..." does not exist` for each statement on each new connection, noise in the
    server log and in the error and rollback counts monitoring reads. A connection that lost it
    since (`DISCARD ALL`, `DEALLOCATE`, a transaction-pooling proxy) answers SQLSTATE 26000, and
    it is prepared and run again; one whose plan a migration made stale (a column's type
    changed: SQLSTATE 0A000) is deallocated and prepared again the same way. One that has it
    though this process did not prepare it there (a transaction-pooling proxy hands out server
    connections another client connection prepared on) answers SQLSTATE 42P05 to the prepare,
    and it is run as it is: the name carries a digest of the SQL, so a statement of that name
    is this very statement, never another one that was given the same name.
    """

    def __init__(self, name: str, sql: str, binary_rows: bool = False) -> None:
        """`name` must be unique among this process's prepared statements; `sql` uses $1, $2 ... with casts."""
        digest = hashlib.sha256(sql.encode()).hexdigest()[:12]
        self._name = f"tv_{name}_{digest}".encode()
        self._sql = sql.encode()
        self._result_format = pq.Format.BINARY if binary_rows else pq.Format.TEXT

    @property
    def name(self) -> str:
        """The name it is prepared under on the server (`tv_<name>_<digest of the SQL>`)."""
        return self._name.decode()

    def rows(self, conn: psycopg.Connection[Any], params: Sequence[str | None]) -> list[tuple[Any, ...]]:
        """Run the statement; its rows as tuples of Python values (as `conn.execute(...).fetchall()`)."""
        result = self._run(conn, params)
        if result.ntuples == 0:
            return []
        transformer = Transformer(conn)
        transformer.set_pgresult(result)
        rows: list[tuple[Any, ...]] = transformer.load_rows(0, result.ntuples, tuple)
        return rows

    def run(self, conn: psycopg.Connection[Any], params: Sequence[str | None]) -> None:
        """Run the statement for its effect (it commits on its own: autocommit)."""
        self._run(conn, params)

    def _run(self, conn: psycopg.Connection[Any], params: Sequence[str | None]) -> pq.abc.PGresult:
        pgconn = conn.pgconn
        if (
            not conn.autocommit
            or pgconn.transaction_status != pq.TransactionStatus.IDLE
            or pgconn.pipeline_status != pq.PipelineStatus.OFF
        ):
            raise psycopg.ProgrammingError("prepared hot-path statements run only on an idle autocommit connection")
        encoding = conn.info.encoding
        encoded = [None if p is None else p.encode(encoding) for p in params]
        if any(v is not None and b"\x00" in v for v in encoded):
            raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        values = cast(list[bytes], encoded)  # None is NULL (psycopg itself passes it so; its stubs omit it)
        prepared = _PREPARED_ON.get(conn)
        if prepared is None or self._name not in prepared:
            self._prepare(conn)
        result = pgconn.exec_prepared(self._name, values, None, self._result_format)
        if (
            result.status == pq.ExecStatus.FATAL_ERROR
            and result.error_field(pq.DiagnosticField.SQLSTATE) in _PREPARE_AGAIN
        ):
            if result.error_field(pq.DiagnosticField.SQLSTATE) == _STALE_PLAN:
                pgconn.exec_(b"DEALLOCATE " + self._name)
            self._prepare(conn)
            result = pgconn.exec_prepared(self._name, values, None, self._result_format)
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            raise _error(conn, result)
        return result

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        """Prepare the statement on `conn` and remember it there."""
        prepared = conn.pgconn.prepare(self._name, self._sql, None)
        already = prepared.error_field(pq.DiagnosticField.SQLSTATE) == _ALREADY_PREPARED
        if prepared.status != pq.ExecStatus.COMMAND_OK and not already:
            raise _error(conn, prepared)
        _PREPARED_ON.setdefault(conn, set()).add(self._name)


def _error(conn: psycopg.Connection[Any], result: pq.abc.PGresult) -> psycopg.Error:
    """The exception psycopg raises for this result: OperationalError when the connection is gone."""
    if conn.pgconn.status != pq.ConnStatus.OK:
        return psycopg.OperationalError("the connection to the database was lost")
    return error_from_result(result, encoding=conn.info.encoding)
