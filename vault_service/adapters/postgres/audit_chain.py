"""Reads of the audit chain and its checkpoints: the audit upkeep's, audit-verify's and who-saw's.

Moved out of audit.py (which appends) as they are (review 17, #3): the chain's head within the id
sequence (`head`, `id_sequence`), the upkeep's byte-bounded segment pages (`segment`), the whole
log for verification (`records`), and vault.audit_checkpoints (`add_checkpoint`,
`newest_checkpoint`, `last_checkpoint_head`, `checkpoints`; on a database before migration 0070 their v1
columns, no checkpoint committing to the erase rows, logged once as the 0015 fallback is). Every statement of
the upkeep's round runs under its statement timeout `upkeep_statement_timeout`, on a connection its watchdog can
sever (`sever`, upkeep_connections.py: attack 17, findings 2 and 3). Rows are read in binary as
the verifier hashes them (audit_records.py): `revealed` as the bytes the chain trigger hashed, a
time out of a `datetime`'s range as UNREADABLE_TIME.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from tokenvault_common.database_dsn import conninfo_now
from vault_service.adapters.postgres.audit_records import (
    RECORD_COLUMNS,
    RECORD_PAGE,
    SEGMENT_PAGE,
    audit_record,
    record_cursor,
    record_page_rows,
    segment_rows,
)
from vault_service.adapters.postgres.errors import translated
from vault_service.adapters.postgres.probe import probe
from vault_service.adapters.postgres.upkeep_connections import UpkeepConnections
from vault_service.domain.audit import MAX_REPORTED_ROW_BYTES, MAX_ROW_BYTES, AuditRecord, OversizedRecord
from vault_service.domain.checkpoints import ChainHead, Checkpoint, IdSequence
from vault_service.domain.database_probe import ProbeAnswer
from vault_service.domain.erase_commitment import EraseCommitment
from vault_service.domain.errors import AuditUnavailable
from vault_service.domain.segment_check import SEGMENT_PAGE_BYTES, SegmentRow

log = logging.getLogger(__name__)
_T = TypeVar("_T")

RECORD_PAGE_ROWS = 500
"""Records a report reads per statement (`record_pages`): ~1 MB of production-shaped rows (~2.1 KB each as read),
~10 MB of batched reveals' (1 000 keyed hashes a row); a page is ~10 ms of verification, after which the vault's
report pauses (audit_report_session.py). Pages of 250 and 1 000 verified as fast (docs/performance.md)."""
RECORD_PAGE_BYTES = 4 * 1024 * 1024
"""Bytes of rows one page of a report reads at most, besides its first row (at most MAX_REPORTED_ROW_BYTES): the
serving role could insert rows of 100 MB each, and 500 of them made one page (attack 28, F3)."""

_HANDED_OUT = "(SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM vault.audit_log_id_seq)"
"""The highest id the chain trigger's nextval has handed out (read after the statement's snapshot,
so it is at least the id of every row the statement sees that the trigger numbered)."""
_HEAD = (
    "SELECT a.id, a.row_hash,"
    " %(base)s + (SELECT count(*) FROM ONLY vault.audit_log x WHERE x.id > %(after)s AND x.id <= a.id),"
    " clock_timestamp()"
    f" FROM (SELECT id, row_hash FROM ONLY vault.audit_log WHERE id <= {_HANDED_OUT} ORDER BY id DESC LIMIT 1) AS a"
)
_HEAD_UNBOUNDED = _HEAD.replace(f" WHERE id <= {_HANDED_OUT}", "")
"""The head as before migration 0015, where the service may not read the id sequence."""
_ID_SEQUENCE = (
    "SELECT coalesce((SELECT max(id) FROM ONLY vault.audit_log), 0),"
    f" coalesce({_HANDED_OUT}, 0), s.seqcache, s.seqincrement"
    " FROM pg_catalog.pg_sequence s WHERE s.seqrelid = 'vault.audit_log_id_seq'::regclass"
)
"""The newest row's id (the primary key's last entry) and the sequence's state: O(1) at any log size."""


class PostgresAuditChain:
    """Reads of vault.audit_log's chain and of vault.audit_checkpoints, and storing a checkpoint."""

    def __init__(self, pool: ConnectionPool) -> None:
        """Reads through `pool` (the vault's connections)."""
        self._pool = pool
        self._unbounded_told = False  # the head fallback before migration 0015 is logged once per process
        self._uncommitted_told = False  # the checkpoints' fallback before migration 0070 is logged once per process
        self._commitment_columns = False  # seen once, vault.audit_checkpoints' erase-row columns are not probed again
        self._upkeep = UpkeepConnections(pool)

    @property
    def upkeep_statement_timeout(self) -> float | None:
        """Seconds each statement of the upkeep's round may take before the server cancels it (None: no bound).

        A hanging round would be neither counted nor alerted on (review 17, finding 2; attack 17,
        finding 2: the checkpoint INSERT held by a lock); cancelled, it is a failed round
        (tokenvault_audit_upkeep_failed_total, alert AuditUpkeepFailing). The owner can trap the
        cancel: the upkeep's watchdog then severs the connection (`sever`).
        """
        return self._upkeep.timeout

    @upkeep_statement_timeout.setter
    def upkeep_statement_timeout(self, seconds: float | None) -> None:
        self._upkeep.timeout = seconds

    def sever(self) -> int:
        """Shut down, at the socket, the connections the upkeep's statements hold now; how many.

        See upkeep_connections.py: called by the upkeep's watchdog from its own thread.
        """
        return self._upkeep.sever()

    def probe_database(self) -> ProbeAnswer:
        """How the vault's database meets a connection of its own, opened outside the pool (a probe).

        The upkeep asks after a pool timeout (review 18, R18-12): every pooled connection busy -
        statements held by a lock the database owner took on vault.tokens, say - is not an outage
        when the database answers this one, nor when its server refuses it (review 19, R19-7:
        adapters/postgres/probe.py).
        """
        conninfo, kwargs = self._pool.conninfo, self._pool.kwargs  # as the pool connects (either may be a callable)
        settings = (kwargs() if callable(kwargs) else kwargs) or {}
        return probe(conninfo_now(conninfo), settings)

    @translated
    def segment(self, after_id: int, head: ChainHead, own: Sequence[tuple[int, bytes]], rows: int) -> list[SegmentRow]:
        """The next page of the chain segment after `after_id` up to `head`, in id order: one bounded read.

        At most `rows` rows (keyset on id). Each row's hashes come only when 32 bytes long (b""
        otherwise), and its fields only when it must be hashed (not one of `own`, the (id,
        row_hash) of rows this process appended), when they fit in MAX_ROW_BYTES (else the row
        is `oversize`, its fields never fetched) and while the page's fields stay within
        SEGMENT_PAGE_BYTES: the page ends before the first row past that, and the next one
        starts there. The ids of `own` are distinct (a page row would come back once per match
        of the join otherwise: a repeated row, read as a broken link, fails closed). The lengths
        are computed in the statement that returns the fields, so
        whatever the database owner puts in the log or shows through a view, one read receives
        at most SEGMENT_PAGE_BYTES + MAX_ROW_BYTES of fields (review 17 #1: a huge result
        could OOM-kill the replica, erasing its unchecked rows).
        """
        ids, hashes = [i for i, _ in own], [h for _, h in own]
        with self._upkeep.statement() as conn:
            cursor = record_cursor(conn)  # as `records`: `revealed` as the bytes the chain trigger hashed
            found = cursor.execute(
                SEGMENT_PAGE,
                {
                    "after": after_id,
                    "head": head.head_id,
                    "rows": rows,
                    "own_ids": ids,
                    "own_hashes": hashes,
                    "cap": MAX_ROW_BYTES,
                    "budget": SEGMENT_PAGE_BYTES,
                },
            ).fetchall()
        return segment_rows(found)

    @translated
    def records(self, after_id: int = 0) -> list[AuditRecord]:
        """Every record after `after_id`, in order, for verification.

        Read in binary, `revealed` kept as the bytes the chain trigger hashed (an empty array and
        NULL, or arrays of other shapes, differ there and not once parsed into a list); a time
        out of a `datetime`'s range read as UNREADABLE_TIME, reported as tampered.
        """
        with self._pool.connection() as conn:
            cursor = record_cursor(conn)
            rows = cursor.execute(
                f"SELECT {RECORD_COLUMNS} FROM ONLY vault.audit_log WHERE id > %s ORDER BY id", (after_id,)
            ).fetchall()
        return [audit_record(r) for r in rows]

    def record_pages(self, after_id: int = 0, rows: int = RECORD_PAGE_ROWS) -> Iterator[list[AuditRecord]]:
        """Every record after `after_id`, in id order, a page of at most `rows` at a time (keyset on id).

        The reports verify the log as it comes (service/audit_verify.py), so a log of any length
        is read in memory bounded by a page: the whole log read at once held ~2.1 KB of the
        process a row (review 30, R30-1). The pages end at the newest id when the read begins:
        rows appended meanwhile are the next report's. A page holds at most RECORD_PAGE_BYTES of rows
        besides its first, and no row larger than MAX_REPORTED_ROW_BYTES is read: at the first one the
        rows before it are given, then OversizedRecord names it (attack 28, F3). Each page is one statement (one read of
        those rows, read as `records` reads them), so the report's statement timeout and the
        cancellation of its running statement hold for each page.
        """
        last, newest = after_id, self._newest_id()
        while last < newest:
            page, oversized = self._record_page(last, newest, rows)
            if page:
                yield page
            if oversized is not None:
                raise OversizedRecord(*oversized)
            if not page or page[-1].record_id <= last:  # none, or no progress (a view): read no further
                return
            last = page[-1].record_id

    @translated
    def _newest_id(self) -> int:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT coalesce(max(id), 0) FROM ONLY vault.audit_log").fetchone()
        return int(row[0]) if row else 0

    @translated
    def _record_page(self, after_id: int, upto: int, rows: int) -> tuple[list[AuditRecord], tuple[int, int] | None]:
        """The page's records up to its first oversized row, and that row's (id, size) (`record_page_rows`)."""
        with self._pool.connection() as conn:
            cursor = record_cursor(conn)
            found = cursor.execute(
                RECORD_PAGE,
                {
                    "after": after_id,
                    "upto": upto,
                    "rows": rows,
                    "cap": MAX_REPORTED_ROW_BYTES,
                    "budget": RECORD_PAGE_BYTES,
                },
            ).fetchall()
        return record_page_rows(found)

    @translated
    def head(self, since: ChainHead | None = None) -> ChainHead | None:
        """The newest row's id and hash, the number of rows, and the database's clock; None when empty.

        Only rows whose id the id sequence has handed out count: the chain trigger numbers every
        row with nextval, so a row beyond the sequence's last value was written behind it (the
        database owner set the sequence ahead for one insert and back). Taking such a row as the
        head would keep every later row - numbered below it - out of the checkpoints for good
        (see `id_sequence`).

        Rows are counted from `since` on (a head this process counted before: the log only
        grows, and ids follow commit order under the chain lock), else all of them. Counting
        the whole log every interval would cost more with every call the vault ever served;
        counting from the database's newest checkpoint row would sign whatever count that row
        claims, and the database owner can write one.
        """
        base, after = (since.row_count, since.head_id) if since else (0, 0)
        with self._upkeep.statement() as conn:
            try:
                with conn.transaction():  # a savepoint: the fallback runs in the same transaction
                    row = conn.execute(_HEAD, {"base": base, "after": after}).fetchone()
            except psycopg.errors.InsufficientPrivilege:
                # A database not yet at migration 0015 (the service runs through an upgrade); the
                # sequence check (`id_sequence`) fails the same way and is counted every round.
                if not self._unbounded_told:
                    self._unbounded_told = True
                    log.error(
                        "cannot read the audit id sequence: apply migration 0015; until then the head is taken"
                        " unbounded (logged once)"
                    )
                row = conn.execute(_HEAD_UNBOUNDED, {"base": base, "after": after}).fetchone()
        return ChainHead(row[0], bytes(row[1]), row[2], row[3]) if row else None

    @translated
    def id_sequence(self) -> IdSequence:
        """The log's newest id and the audit id sequence's last value, cache and increment (one statement)."""
        with self._upkeep.statement() as conn:
            row = conn.execute(_ID_SEQUENCE).fetchone()
        if row is None:
            raise AuditUnavailable("the audit id sequence vault.audit_log_id_seq is missing; run the migrations")
        return IdSequence(int(row[0]), int(row[1]), int(row[2]), int(row[3]))

    @translated
    def holds_erase_commitments(self) -> bool:
        """Whether vault.audit_checkpoints has migration 0070's erase-row columns: False on a database before it.

        The upkeep signs a head's erase-row commitment (v2) only when it can be stored (A46-3). Probed until seen (a
        running service picks the migration up), then taken as there: columns dropped after that fail the
        checkpoint's INSERT (a refusal, exported anyway), and audit verify's schema check names them missing.
        """
        if self._commitment_columns:
            return True
        with self._upkeep.statement() as conn:
            found = self._v2(conn, lambda: conn.execute(f"{_CHECKPOINTS} LIMIT 0").fetchall())
        self._commitment_columns = found is not False
        return self._commitment_columns

    @translated
    def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """Store a signed checkpoint; False when one for the same head exists already (another replica).

        On a database before migration 0070 a checkpoint without a commitment is stored in the columns it has
        (logged once); one with a commitment cannot be (its signature covers it): the INSERT's refusal is raised.
        """
        head, erasures = checkpoint.head, checkpoint.head.erasures
        v1 = (head.head_id, head.head_hash, head.row_count, head.at, checkpoint.key_name, checkpoint.signature)
        with self._upkeep.statement() as conn:
            try:
                with conn.transaction():  # a savepoint: the fallback runs in the same transaction
                    cursor = conn.execute(
                        f"{_INSERT} VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (head_id) DO NOTHING",
                        (
                            *v1,
                            None if erasures is None else erasures.count,
                            None if erasures is None else erasures.digest,
                        ),
                    )
            except psycopg.errors.UndefinedColumn:
                if erasures is not None:
                    raise
                self._before_0070()
                cursor = conn.execute(
                    f"{_INSERT_V1} VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (head_id) DO NOTHING", v1
                )
            return cursor.rowcount == 1

    @translated
    def newest_checkpoint(self) -> Checkpoint | None:
        """The newest stored checkpoint (None when none)."""
        with self._upkeep.statement() as conn:
            rows = self._checkpoint_rows(conn, " ORDER BY head_id DESC LIMIT 1")
        return _checkpoint(rows[0]) if rows else None

    @translated
    def committed_checkpoints(self, above: int, below: int | None, rows: int) -> list[Checkpoint]:
        """Up to `rows` stored checkpoints committing to the erase rows, heads in (`above`, `below`), newest first.

        Their signatures unchecked: the vault's own role can insert one (review 47, R47-6), so the caller pages on
        to the newest genuine one. A half-filled pair (a count without a digest, or the reverse: R47-3) is read as
        a commitment no signature holds for (see `_checkpoint`). Read through the pool, not the upkeep's
        connections: the replicas' erase-row checks read it (A46-3). Empty on a database before migration 0070 (no
        checkpoint there commits to the erase rows; logged once).
        """
        upper = "" if below is None else " AND head_id < %(below)s"
        with self._pool.connection() as conn:
            found = self._v2(
                conn,
                lambda: conn.execute(
                    f"{_CHECKPOINTS} WHERE (erase_count IS NOT NULL OR erase_digest IS NOT NULL)"
                    f" AND head_id > %(above)s{upper} ORDER BY head_id DESC LIMIT %(rows)s",
                    {"above": above, "below": below, "rows": rows},
                ).fetchall(),
            )
        return [_checkpoint(row) for row in found] if found else []

    @translated
    def last_checkpoint_head(self) -> int:
        """The head id of the newest checkpoint (0 when none)."""
        with self._pool.connection() as conn:
            row = conn.execute("SELECT coalesce(max(head_id), 0) FROM ONLY vault.audit_checkpoints").fetchone()
        return int(row[0]) if row else 0

    @translated
    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, oldest first."""
        with self._pool.connection() as conn:
            rows = self._checkpoint_rows(conn, " ORDER BY head_id")
        return [_checkpoint(r) for r in rows]

    def _checkpoint_rows(self, conn: psycopg.Connection[Any], order: str) -> list[Any]:
        """`_CHECKPOINTS` then `order`; before migration 0070 its v1 columns, the commitment read as NULL, NULL."""
        found = self._v2(conn, lambda: conn.execute(f"{_CHECKPOINTS}{order}").fetchall())
        return found if found is not False else conn.execute(f"{_CHECKPOINTS_V1}{order}").fetchall()

    def _v2(self, conn: psycopg.Connection[Any], read: Callable[[], _T]) -> _T | Literal[False]:
        """`read()` in a savepoint; False, logged once, when a column of migration 0070 is not there (UndefinedColumn).

        A column of the v1 list missing too is met by the v1 statement that follows, and raised from there.
        """
        try:
            with conn.transaction():  # a savepoint: the fallback runs in the same transaction
                return read()
        except psycopg.errors.UndefinedColumn:
            self._before_0070()
            return False

    def _before_0070(self) -> None:
        if not self._uncommitted_told:
            self._uncommitted_told = True
            log.error(
                "vault.audit_checkpoints has no erase-row columns: apply migration 0070; until then checkpoints carry"
                " no erase-row commitment (logged once)"
            )


_CHECKPOINTS = (
    "SELECT head_id, head_hash, row_count, at, key_name, signature, erase_count, erase_digest"
    " FROM ONLY vault.audit_checkpoints"
)
"""A stored checkpoint's columns, with its erase-row commitment (NULL, NULL before migration 0070: v1, A46-3)."""
_CHECKPOINTS_V1 = _CHECKPOINTS.replace("erase_count, erase_digest", "NULL::bigint, NULL::bytea")
"""`_CHECKPOINTS` on a database before migration 0070: no commitment, every checkpoint v1."""
_INSERT = (
    "INSERT INTO vault.audit_checkpoints"
    " (head_id, head_hash, row_count, at, key_name, signature, erase_count, erase_digest)"
)
_INSERT_V1 = "INSERT INTO vault.audit_checkpoints (head_id, head_hash, row_count, at, key_name, signature)"
"""A checkpoint's columns before migration 0070: no erase-row commitment."""


def _checkpoint(row: Sequence[Any]) -> Checkpoint:
    """A row of `_CHECKPOINTS` as a Checkpoint (its commitment None when the row holds none).

    A pair with one half NULL (the CHECK of migration 0070 lets it pass) is read with -1 / an empty digest in that
    half: the signer never signs such a commitment, so its signature fails and every reader names it (R47-3).
    """
    if row[6] is None and row[7] is None:
        erasures = None
    else:  # a half-filled pair reads as a commitment no genuine signature covers: a finding, never v1 (R47-3)
        erasures = EraseCommitment(-1 if row[6] is None else int(row[6]), b"" if row[7] is None else bytes(row[7]))
    return Checkpoint(ChainHead(row[0], bytes(row[1]), row[2], row[3], erasures), row[4], row[5])
