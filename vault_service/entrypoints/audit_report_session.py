"""The audit reports made by the service for a client certificate (AuditReports), wired to the running vault.

Each report reads on a connection of its own (the serving pool is never held by a read of the
whole log), opened for the report and closed after it, whose statements end after the report's
time (`statement_timeout`): a report that outlives its call's deadline stops reading. It verifies
with the service's own Vault session (the signing key's public keys), its loaded audit keys and its
own exported checkpoint copy (TOKENVAULT_AUDIT_CHECKPOINT_FILE); the caller names none of them.
The log is streamed, a page at a time, through the verification (memory flat whatever its length),
pausing after each page so the serving calls keep the GIL; a log longer than a report may verify in
its time (TOKENVAULT_AUDIT_REPORT_MAX_ROWS) is refused before it is read (`report_verifier`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import Connection
from psycopg_pool import ConnectionPool, PoolTimeout

from vault_service.adapters.postgres import PostgresAuditLog, PostgresTokenStore
from vault_service.adapters.postgres.errors import translated
from vault_service.adapters.postgres.schema_catalog import PostgresVaultSchema
from vault_service.adapters.postgres.session_settings import session_settings_with
from vault_service.adapters.transit import verify_signature
from vault_service.bootstrap import Bootstrapped, open_vault_pool
from vault_service.config import VaultServiceConfig
from vault_service.domain.anchoring import AppendedRows
from vault_service.domain.checkpoints import ChainHead
from vault_service.domain.erase_commitment import EraseCommitment
from vault_service.domain.errors import DatabaseUnreachable, VaultError
from vault_service.service.audit_reports import AuditReports, Check, Verify, too_large
from vault_service.service.audit_verify import COPY_LAG_INTERVALS, FullAuditReport, verify_audit_and_erasures
from vault_service.service.exported_copy import VAULTS_COPY, ExportedCopy

log = logging.getLogger(__name__)

PAUSE_PER_WORK = 1.0
"""After each page of the log, a report pauses as long as it worked on it (at most 1 s): it takes half the
GIL, and the serving calls get it back at once (measured over 200 000 rows, docs/performance.md: Detokenize
p50 3.2 -> 3.2-3.9 ms and p99 7-9 -> 14-15 ms during the report, against 9-10 ms and 27-31 ms unpaused and
11-13 ms and 28-44 ms whole-log; the report takes ~2.3x as long, ~16 000 rows a second)."""
WATCH_SECONDS = 0.25
"""How often a running report's watch asks whether its call has ended."""
NEWEST_SIGNED = (
    "SELECT c.head_id, c.head_hash, c.row_count, c.at, c.signature,"
    " (SELECT count(*) FROM vault.audit_log l WHERE l.id > c.head_id), c.erase_count, c.erase_digest"
    " FROM vault.audit_checkpoints c ORDER BY c.head_id DESC LIMIT 1"
)
"""The newest checkpoint (the rows up to its head, as the vault counted and signed them) and the rows after it."""
NEWEST_SIGNED_V1 = NEWEST_SIGNED.replace("c.erase_count, c.erase_digest", "NULL::bigint, NULL::bytea")
"""`NEWEST_SIGNED` on a database before migration 0070: no erase-row commitment (a v1 checkpoint)."""
EVERY_ROW = "SELECT count(*) FROM vault.audit_log WHERE id > 0"
"""Every row a report reads (`records()`: ids above 0); the chain's ids are not dense (two sequence values
a row), so the newest id is no count."""


@translated
def log_rows(pool: ConnectionPool, signed: Callable[[bytes, str], bool]) -> int:
    """The rows a report would read, counted cheaply: the newest checkpoint's signed count and the rows after it.

    A checkpoint's count is the vault's own (counted as it appended, signed with the audit key):
    the database's owner cannot lower it without the signing key, and the rows after its head are
    a few seconds' worth. Without a checkpoint, or with one whose signature does not hold, every
    row is counted. On a database before migration 0070 the checkpoint's v1 columns are read.
    """
    with pool.connection() as conn:
        try:
            with conn.transaction():  # a savepoint: the fallback runs in the same transaction
                newest = conn.execute(NEWEST_SIGNED).fetchone()
        except psycopg.errors.UndefinedColumn:  # a database before migration 0070 (the service runs through it)
            newest = conn.execute(NEWEST_SIGNED_V1).fetchone()
        if newest is not None:
            erasures = None if newest[6] is None else EraseCommitment(int(newest[6]), bytes(newest[7]))
            head = ChainHead(int(newest[0]), bytes(newest[1]), int(newest[2]), newest[3], erasures)
            if signed(head.message(), str(newest[4])):
                return head.row_count + int(newest[5])
        every = conn.execute(EVERY_ROW).fetchone()
    return int(every[0]) if every is not None else 0


def _cancel_when_ended(check: Check, connections: list[Connection[Any]], ended: threading.Event) -> None:
    """Cancel the report's running statement as soon as its call ends (deadline passed, caller gone).

    The phases check between them, but one statement (the whole log's read) may run for minutes:
    without this it ran on, and held the one report at a time, until its `statement_timeout`
    (review 30, R30-3).
    """
    while not ended.wait(WATCH_SECONDS):
        try:
            check()
        except VaultError:
            for conn in list(connections):
                try:
                    conn.cancel_safe(timeout=5.0)
                except psycopg.Error as error:  # the statement ends at its statement_timeout anyway
                    log.warning("could not cancel an ended audit report's statement (%s)", type(error).__name__)
            return


class _Paced:
    """`check()`, then a pause of `pause` times the work since the last one: the GIL left to the serving calls.

    Called after every page of the log (and between the verification's phases). A report verifies
    in Python, holding the process's GIL while it works: the vault's other calls, which take the GIL
    back after each read and write, waited up to its switch interval (5 ms) each time (review 30:
    Detokenize p50 1.9 -> 48 ms during a 200 k-row report). Paused, the report leaves them the GIL.
    """

    def __init__(self, check: Check, pause: float) -> None:
        self._check = check
        self._pause = pause
        self._since = time.perf_counter()

    def __call__(self) -> None:
        self._check()
        worked = time.perf_counter() - self._since
        time.sleep(min(worked * self._pause, 1.0))
        self._since = time.perf_counter()


def report_verifier(wired: Bootstrapped, config: VaultServiceConfig) -> Verify:
    """`verify(max_copy_lag, seconds, check, sent, keep)`: the full verification, on a connection of its own.

    Its statements end after `seconds`; it verifies against the vault's own copy (named
    VAULTS_COPY, never by its path) and the copy the caller `sent` too, when it sent one.

    The log is streamed through the verification a page at a time (`record_pages`), keeping only
    what the answer needs: the vault's memory stays flat whatever the log's length (review 30,
    R30-1: the whole log held took ~2.1 KB a row; 300 000 rows now raise the peak by a few MB).
    After each page the report pauses (`_Paced`) so the serving calls keep the GIL. The log is
    counted first (`log_rows`): a log of more rows than `audit_report_max_rows`
    (TOKENVAULT_AUDIT_REPORT_MAX_ROWS, default 2 500 000: ~160 s at the ~16 000 rows a second
    measured, within MAX_REPORT_SECONDS) is refused before anything is read: it would not be
    verified in the time a report may take.
    """

    def verify(
        max_copy_lag: float, seconds: float, check: Check, sent: ExportedCopy | None, keep: frozenset[bytes]
    ) -> FullAuditReport:
        settings = {
            **session_settings_with(config.db_synchronous_commit, report=True),  # reads past a policy to name it
            "statement_timeout": str(max(1, int(seconds * 1000))),
        }
        connections: list[Connection[Any]] = []
        try:
            pool = open_vault_pool(config.database_conninfo, 1, settings, connections.append)
        except PoolTimeout:
            raise DatabaseUnreachable("the vault database cannot be reached; retry later") from None
        ended = threading.Event()
        watch = threading.Thread(
            target=_cancel_when_ended, args=(check, connections, ended), name="audit-report-watch", daemon=True
        )
        watch.start()
        try:
            public_keys = wired.signer.public_keys()
            rows = log_rows(pool, lambda data, signature: verify_signature(public_keys, data, signature))
            if rows > config.audit_report_max_rows:
                raise too_large(rows, config.audit_report_max_rows)
            check()
            paced = _Paced(check, PAUSE_PER_WORK)
            return verify_audit_and_erasures(
                PostgresAuditLog(pool, AppendedRows()),
                PostgresTokenStore(pool),
                wired.keys.ring.audit_keys,
                public_keys,
                verify_signature,
                config.audit_checkpoint_file,
                max_copy_lag,
                paced,
                sent,
                keep,
                VAULTS_COPY,  # its path is not the caller's to know (attack 28, F6)
                schema=PostgresVaultSchema(pool),
            )
        finally:
            ended.set()
            watch.join()
            pool.close()

    return verify


def audit_reports_of(wired: Bootstrapped, config: VaultServiceConfig) -> AuditReports:
    """The service's audit reports: authorized by the policy (refusals audited), rows in the service's audit log."""
    return AuditReports(
        wired.vault.authorize_audit_report,
        report_verifier(wired, config),
        wired.audit,
        wired.keys,
        COPY_LAG_INTERVALS * config.audit_checkpoint_seconds,
        wired.vault.refuse_audit_report,
        budget=wired.vault.take_audit_report,
        reports_of=wired.vault.audit_reports_of,
    )
