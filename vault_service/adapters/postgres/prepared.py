"""The hot path's statements as libpq prepared statements, past psycopg's per-execute layers.

Each single-token Detokenize runs three statements: its fetch, its audit append and the
append's presence check (the last one unnamed, not prepared: see `UnnamedStatement`). Through
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
import logging
import threading
import weakref
from collections.abc import Sequence
from typing import Any, cast

import psycopg
from psycopg import pq
from psycopg.adapt import Transformer
from psycopg.errors import error_from_result

log = logging.getLogger(__name__)

_UNKNOWN_STATEMENT = b"26000"  # invalid_sql_statement_name: not prepared on this connection (yet)
_STALE_PLAN = b"0A000"  # "cached plan must not change result type": a migration changed a column since
_PREPARE_AGAIN = (_UNKNOWN_STATEMENT, _STALE_PLAN)
_ALREADY_PREPARED = b"42P05"  # duplicate_prepared_statement: something else prepared that name on the connection

_PREPARED_ON: weakref.WeakKeyDictionary[psycopg.Connection[Any], set[bytes]] = weakref.WeakKeyDictionary()
"""The statement names prepared on each connection (weak: a connection the pool drops takes its entry along)."""

_replaced_lock = threading.Lock()
_replaced = 0


def planted_statements_replaced() -> int:
    """How many statements of the vault's names this process found prepared by something else, and replaced."""
    return _replaced


def _count_replaced() -> None:
    global _replaced
    with _replaced_lock:
        _replaced += 1


class _LibpqStatement:
    """What a statement run through libpq's own calls shares: the checks, the parameters, the rows."""

    def __init__(self, sql: str, binary_rows: bool) -> None:
        self._sql = sql.encode()
        self._result_format = pq.Format.BINARY if binary_rows else pq.Format.TEXT

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
        result = self._execute(conn, values)
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            raise _error(conn, result)
        return result

    def _execute(self, conn: psycopg.Connection[Any], values: list[bytes]) -> pq.abc.PGresult:
        raise NotImplementedError


class UnnamedStatement(_LibpqStatement):
    """One SQL statement with `$n` parameters, sent with each run as libpq's unnamed statement.

    For a statement that checks what a prepared one did (the audit presence check): a name
    another party prepared first in the session never stands in for it. The server parses and
    plans it on every run (one round trip all the same); rows and errors are as `PreparedStatement`'s.
    """

    def __init__(self, sql: str, binary_rows: bool = False) -> None:
        """`sql` uses $1, $2 ... with casts."""
        super().__init__(sql, binary_rows)

    def _execute(self, conn: psycopg.Connection[Any], values: list[bytes]) -> pq.abc.PGresult:
        return conn.pgconn.exec_params(self._sql, values, None, None, self._result_format)


class PreparedStatement(_LibpqStatement):
    """One SQL statement with `$n` parameters, prepared on each connection before it first runs there.

    The names prepared on each connection are remembered (`_PREPARED_ON`), so a connection's
    first run does not fail first: tried unprepared, it made Postgres log `ERROR: prepared
    statement "tv_..." does not exist` for each statement on each new connection, noise in the
    server log and in the error and rollback counts monitoring reads. A connection that lost it
    since (`DISCARD ALL`, `DEALLOCATE`) answers SQLSTATE 26000, and it is prepared and run
    again; one whose plan a migration made stale (a column's type changed: SQLSTATE 0A000) is
    deallocated and prepared again the same way.

    A statement of that name that this process did not prepare on the connection (the prepare
    answers SQLSTATE 42P05) is never run: it is deallocated and this statement's own SQL is
    prepared in its place, with a warning and a count (`planted_statements_replaced`). The name
    carries a digest of the SQL, which keeps two statements of this process apart; it does not
    make a statement of that name this one: the SQL is in the source, so anyone can compute the
    name and PREPARE something else under it first (insider round 14, finding 1) - a database
    owner's login event trigger (PostgreSQL 17), or another client of the same server
    connection behind a transaction-pooling proxy. No such proxy may stand in front of the
    vault's database (docs/production.md): with autocommit, a proxy in transaction or
    statement mode may hand each statement to a server connection another client prepared on,
    and no check made here would hold for the next statement.

    A statement that guards another one (the audit presence check) is not prepared at all
    (`UnnamedStatement`): one name replaced in the session must not defeat both.
    """

    def __init__(self, name: str, sql: str, binary_rows: bool = False) -> None:
        """`name` must be unique among this process's prepared statements; `sql` uses $1, $2 ... with casts."""
        super().__init__(sql, binary_rows)
        digest = hashlib.sha256(self._sql).hexdigest()[:12]
        self._name = f"tv_{name}_{digest}".encode()

    @property
    def name(self) -> str:
        """The name it is prepared under on the server (`tv_<name>_<digest of the SQL>`)."""
        return self._name.decode()

    def _execute(self, conn: psycopg.Connection[Any], values: list[bytes]) -> pq.abc.PGresult:
        pgconn = conn.pgconn
        prepared = _PREPARED_ON.get(conn)
        if prepared is None or self._name not in prepared:
            self._prepare(conn)
        result = pgconn.exec_prepared(self._name, values, None, self._result_format)
        if (
            result.status == pq.ExecStatus.FATAL_ERROR
            and result.error_field(pq.DiagnosticField.SQLSTATE) in _PREPARE_AGAIN
        ):
            if result.error_field(pq.DiagnosticField.SQLSTATE) == _STALE_PLAN:
                self._deallocate(conn)
            self._prepare(conn)
            result = pgconn.exec_prepared(self._name, values, None, self._result_format)
        return result

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        """Prepare the statement on `conn` and remember it there, replacing one of its name prepared by another."""
        prepared = conn.pgconn.prepare(self._name, self._sql, None)
        if prepared.error_field(pq.DiagnosticField.SQLSTATE) == _ALREADY_PREPARED:
            # Not ours (ours are in _PREPARED_ON): whatever it holds is never run.
            log.warning(
                "a statement of the vault's name was prepared on its database connection by something else:"
                " replaced by the vault's own (tampering, or a transaction-pooling proxy in front of the database)",
                extra={"statement": self.name},
            )
            _count_replaced()
            self._deallocate(conn)
            prepared = conn.pgconn.prepare(self._name, self._sql, None)
        if prepared.status != pq.ExecStatus.COMMAND_OK:
            raise _error(conn, prepared)
        _PREPARED_ON.setdefault(conn, set()).add(self._name)

    def _deallocate(self, conn: psycopg.Connection[Any]) -> None:
        """Drop the statement of this name from `conn`'s session (raise unless it is gone)."""
        result = conn.pgconn.exec_(b"DEALLOCATE " + self._name)
        if result.status != pq.ExecStatus.COMMAND_OK:
            raise _error(conn, result)


def _error(conn: psycopg.Connection[Any], result: pq.abc.PGresult) -> psycopg.Error:
    """The exception psycopg raises for this result: OperationalError when the connection is gone."""
    if conn.pgconn.status != pq.ConnStatus.OK:
        return psycopg.OperationalError("the connection to the database was lost")
    return error_from_result(result, encoding=conn.info.encoding)
