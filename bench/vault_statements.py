"""PostgreSQL's CPU per row for the vault's own statements, at a given number of stored tokens.

`make bench-vault-statements` (or `python -m bench.vault_statements`) starts its own OpenBao
and PostgreSQL (the embedded stack's components, with the shipped settings), fills
`vault.tokens` directly with SQL to each `--sizes` (synthetic rows of the real shape, fast:
about 30 s per million), and then runs the statements the vault service runs, in batches of
1000, from one connection and from 4 at once, as the service's database role with its
session settings:

- `lookup_new`: the Tokenize lookup of values never seen (`_FIND`, nothing found);
- `lookup_stored`: the same lookup of stored values, picked at random (a repeated value that
  missed the cache);
- `fetch_stored`: the Detokenize fetch of stored tokens, picked at random;
- `insert_plain` and `insert_on_conflict`: the new-token insert as the service sends it, in
  its transaction with the key lock and the generation check: plain, and with
  `ON CONFLICT DO NOTHING RETURNING` (the path a batch takes after a unique violation).

It reads the CPU time of the connection's backend from `/proc/<pid>/schedstat` (Linux), so the
figures isolate PostgreSQL from the service and the clients; the vault service is not running.
Every figure is the median of `--repeats` runs of `--batches` batches. Last lines:
`figure: <statement>_<size>[_x4] <µs per row> us`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import random
import statistics
import struct
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from rich.console import Console

from bench.report import Figures, print_figures
from bench.vault_scale import parse_size, size_label
from devstack.stack import temporary_components
from vault_service.adapters.postgres.keys import KEYS_LOCK, LIVE_GENERATION
from vault_service.adapters.postgres.session_settings import VAULT_SESSION_OPTIONS
from vault_service.adapters.postgres.sql_arrays import bytea_array, int_array, text_array
from vault_service.adapters.postgres.tokens import _FETCH_SQL, _FIND, _INSERT

console = Console()
BATCH = 1000
FIRST_ID = 10_000_000
"""Synthetic row n has fingerprint sha256(n) and a token derived from sha256(n || 0x01)."""

_PREFILL = """
INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed)
SELECT 'ip_' || substr(translate(encode(sha256(int8send(i) || '\\x01'::bytea), 'base64'), '+/', '-_'), 1, 22),
       'ip', sha256(int8send(i)), 1, 2, substr(sha256(int8send(-i)) || sha256(int8send(i)), 1, 40)
FROM generate_series(%s::bigint, %s::bigint) AS i
"""
_FETCH = _FETCH_SQL.replace("$1", "%s")


def _fingerprint(n: int) -> bytes:
    return hashlib.sha256(struct.pack(">q", n)).digest()


def _token(n: int) -> str:
    digest = hashlib.sha256(struct.pack(">q", n) + b"\x01").digest()
    return "ip_" + base64.urlsafe_b64encode(digest).decode()[:22]


def _new_token() -> str:
    return "ip_" + base64.urlsafe_b64encode(os.urandom(16)).decode()[:22]


def _backend_cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as stat:
        return int(stat.read().split()[0])


class Statements:
    """The vault's statements on one connection, as the service's role, with batches made up front."""

    def __init__(self, dsn: str, stored: int) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True, options=VAULT_SESSION_OPTIONS)  # as the service's
        self.conn.execute("SET ROLE tokenvault_vault")
        row = self.conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        self.pid = int(row[0])
        self._stored = stored

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def batch(self, statement: str) -> Callable[[], None]:
        """One batch of `statement`, its parameters made now (outside the measured time)."""
        if statement == "lookup_new":
            params: Any = {"type": "ip", "fps": bytea_array([os.urandom(32) for _ in range(BATCH)])}
            return lambda: self._expect(_FIND, params, 0)
        if statement in ("lookup_stored", "fetch_stored"):
            ids = [FIRST_ID + n for n in random.sample(range(self._stored), BATCH)]
            if statement == "lookup_stored":
                params = {"type": "ip", "fps": bytea_array([_fingerprint(n) for n in ids])}
                return lambda: self._expect(_FIND, params, BATCH)
            tokens = (text_array([_token(n) for n in ids]),)
            return lambda: self._expect(_FETCH, tokens, BATCH)
        tail = {"insert_plain": "", "insert_on_conflict": " ON CONFLICT DO NOTHING RETURNING fingerprint, token"}[
            statement
        ]
        columns = (
            text_array([_new_token() for _ in range(BATCH)]),
            text_array(["ip"] * BATCH),
            bytea_array([os.urandom(32) for _ in range(BATCH)]),
            int_array([1] * BATCH),
            int_array([2] * BATCH),
            bytea_array([os.urandom(40) for _ in range(BATCH)]),
            bytea_array([None] * BATCH),
        )
        return lambda: self._insert(tail, columns)

    def _expect(self, query: str, params: Any, rows: int) -> None:
        found = self.conn.execute(query, params).fetchall()
        if len(found) != rows:
            raise RuntimeError(f"expected {rows} rows, got {len(found)}")

    def _insert(self, tail: str, columns: tuple[str, ...]) -> None:
        with self.conn.pipeline(), self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (KEYS_LOCK,))
            self.conn.execute(LIVE_GENERATION)
            inserted = self.conn.execute(_INSERT + tail, columns)
            if tail:
                inserted.fetchall()


def cpu_us_per_row(dsn: str, stored: int, statement: str, batches: int, connections: int) -> float:
    """Backend CPU µs per row of `batches` batches of `statement` on each of `connections` connections at once."""
    sessions = [Statements(dsn, stored) for _ in range(connections)]
    try:
        work = [[s.batch(statement) for _ in range(batches)] for s in sessions]
        before = [_backend_cpu_ns(s.pid) for s in sessions]
        threads = [threading.Thread(target=lambda w=w: [run() for run in w]) for w in work]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        spent = sum(_backend_cpu_ns(s.pid) - b for s, b in zip(sessions, before, strict=True))
    finally:
        for session in sessions:
            session.close()
    return spent / 1000 / (batches * BATCH * connections)


_KEYS = """
INSERT INTO vault.data_keys (id, purpose, kek_name, wrapped_key, state)
VALUES (1, 'fingerprint', 'kek', 'vault:v1:bench-f', 'active'), (2, 'encryption', 'kek', 'vault:v1:bench-e', 'active')
ON CONFLICT (id) DO NOTHING
"""
"""The fingerprint key (1) and data key (2) the synthetic rows name: migration 0037 refuses a row under no key."""


def fill(admin: psycopg.Connection, stored: int, target: int) -> None:
    """Synthetic rows `stored`..`target`-1, in steps of 500k (one statement each), and the keys they name."""
    admin.execute(_KEYS)
    for start in range(stored, target, 500_000):
        end = min(start + 500_000, target)
        admin.execute(_PREFILL, (FIRST_ID + start, FIRST_ID + end - 1))


def run(sizes: list[int], statements: list[str], batches: int, repeats: int) -> Figures:
    """Fill to each size in turn and measure every statement there; figure name -> (median, unit)."""
    figures: Figures = {}
    with temporary_components("tokenvault-statements-") as stack:
        dsn = stack.env["PG_ADMIN_DSN"]
        with psycopg.connect(dsn, autocommit=True) as admin:
            stored = 0
            for size in sizes:
                fill(admin, stored, size)
                stored = size
                admin.execute("VACUUM (ANALYZE) vault.tokens")  # as autovacuum leaves a table that stopped growing
                for statement in statements:
                    if statement.endswith("_stored") and stored < BATCH:
                        continue
                    for connections in (1, 4):
                        samples = [cpu_us_per_row(dsn, stored, statement, batches, connections) for _ in range(repeats)]
                        suffix = "" if connections == 1 else "_x4"
                        name = f"{statement}_{size_label(size)}{suffix}_pg_cpu_per_row"
                        figures[name] = (statistics.median(samples), "us")
                        console.print(f"{name}: {figures[name][0]:.2f} us")
    return figures


STATEMENTS = ("lookup_new", "lookup_stored", "fetch_stored", "insert_plain", "insert_on_conflict")


def main() -> None:
    """Parse arguments, run, print the table and the figure lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="0,1M,3M", help="stored tokens at which to measure (filled by SQL)")
    parser.add_argument("--statements", default=",".join(STATEMENTS), help=f"any of {','.join(STATEMENTS)}")
    parser.add_argument("--batches", type=int, default=10, help="batches of 1000 per measurement and connection")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure; the median is reported")
    args = parser.parse_args()
    statements = args.statements.split(",")
    unknown = set(statements) - set(STATEMENTS)
    if unknown:
        parser.error(f"unknown statements: {', '.join(sorted(unknown))}")
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    figures = run(sizes, statements, args.batches, args.repeats)
    title = f"PostgreSQL CPU per row of the vault's statements, batches of {BATCH}, {os.cpu_count()} cores"
    print_figures(console, title, figures, value_header="median")


if __name__ == "__main__":
    main()
