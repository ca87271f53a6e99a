"""The audit trail's background upkeep: aggregated rows, and signed, exported checkpoints.

Every `interval` seconds (and once more at shutdown) it
1. writes the tokenize meter's per-client rows and the throttled refusals' counts;
2. if the chain has grown since the last checkpoint, signs its head with the Transit signing key
   (sign-only for the service), stores the checkpoint in vault.audit_checkpoints and exports it
   outside Postgres (a JSON log line, and a line in the checkpoint file when one is configured).
So only rows newer than the last checkpoint — at most `interval` seconds of them while the
service runs — are not anchored yet.

A database checkpoint naming a row beyond the chain's head cannot be legitimate (a checkpoint
is stored only once its rows are committed): the database owner planted it, and the table
refuses every later checkpoint as "not newer". The upkeep then logs an error and goes on
signing and exporting the real head without storing it, so the exported copy keeps anchoring
the log (audit-verify checks every exported checkpoint against the rows).

So it does when the database refuses to store a checkpoint for any reason other than being
unreachable (a check or trigger raising, a constraint, a privilege taken away): the head is
exported anyway, and the error logged and counted every round. Otherwise rows written while the
database refuses would be anchored nowhere, and once it accepts checkpoints again - a restart
counts the log afresh - they could be deleted with audit-verify reporting the log intact; the
exported copy, naming those rows with the count this process made, contradicts such a deletion.

Likewise a row beyond the audit id sequence (the chain trigger numbers every row with nextval)
was written behind it: the head is the newest row within the sequence, so the rows after such
a plant - numbered below it - go on being signed, and the upkeep logs an error (ids only) and
counts every round that finds one. So it does when the sequence was altered to hand out ids
out of commit order (a per-session cache, a negative increment).

Each round also checks, before anything is signed, that the chain up to the head holds every
row this process appended (domain/anchoring.py): the segment from its oldest such row to the
head, read once (links and hashes; the full rows only of those it did not append), must hash
and link up to the head, and hold each of them with the link and hash the append returned. A
row it does not hold was diverted out of the chain (insider round 15, finding 1): the upkeep
logs an error (ids only), counts the rows, and names them in the next checkpoint it exports,
under a signature of their own (a note of the head alone when another replica's checkpoint
covers it), so audit-verify with the exported copy reports them.

The rows checked are forgotten only once this process has exported a checkpoint of the very head
they were checked against (the one the round signed, or another replica's genuine checkpoint of
it, exported again): a row the chain merely holds is not anchored yet, and the database owner
who keeps the round from exporting (a lock on vault.audit_checkpoints holding the INSERT) could
rewrite it unseen (attack 17, finding 2). Until then it stays remembered, so the next round
checks it again, and the fail-closed bound, the early warning, the gauge and `stop()` name it.
What is exported is always the head this round read and checked, never read again.

Every statement of a round runs under a server-side statement timeout (5 intervals), and the
round as a whole under a watchdog timed in this process (service/round_watchdog.py): past
ROUND_LIMIT_INTERVALS intervals the round is counted as failed, the unchecked ids are logged,
and its database connections are closed at the socket - a timeout or a cancel the database
owner can trap (attack 17, finding 3), a closed socket he cannot.

A round that fails for any reason (the database or Vault away, a row it cannot read, the
checkpoint file unwritable) is logged by its error's type and message, counted, and retried
at the next interval: the thread never ends before `stop()`. Rows a failing round leaves
unchecked are not dropped: once the oldest is older than the bound (TOKENVAULT_AUDIT_UNCHECKED_SECONDS)
the appends, so the calls, are refused until a round checks them (domain/anchoring.py); the
upkeep's own aggregated rows wait for that round. Rows still unchecked after `stop()`'s last
round are logged (count, lowest and highest id) and counted (review 16, finding 1).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from vault_service.domain.anchoring import (
    SEGMENT_PAGE_ROWS,
    AppendedRows,
    AuditChecksOverdue,
    Link,
    SegmentCheck,
    SegmentRow,
)
from vault_service.domain.checkpoints import ChainHead, Checkpoint, IdSequence
from vault_service.domain.errors import DatabaseUnreachable, StorageError, VaultError
from vault_service.service.metering import RefusalAuditor, TokenizeMeter
from vault_service.service.ports import AuditLog
from vault_service.service.round_watchdog import RoundWatchdog

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 2.0
ROUND_LIMIT_INTERVALS = 6
"""Intervals a round may run before its watchdog fails it (its statements' server-side timeout is 5 intervals)."""
_PAGE_ROWS = SEGMENT_PAGE_ROWS
"""Rows per page of a round's segment read (the serving threads run during each read)."""


def _yield_interpreter() -> None:
    """Let the threads serving calls take the interpreter (the GIL) before a round goes on hashing."""
    time.sleep(0)


def _broken(row_id: int | None) -> str:
    """Where the segment stopped holding, for the log: every appended row in it is then reported."""
    if row_id is None:
        return ""
    return (
        f". The chain segment breaks at row {row_id} (a row not linked to the one before, not hashing to its"
        " fields, or larger than any audit row the vault writes, so not read): it vouches for none of them"
    )


def _same_head(one: ChainHead, other: ChainHead) -> bool:
    """Whether two heads are the same row of the same chain (id, hash and row count; the time they were read aside)."""
    return (one.head_id, one.head_hash, one.row_count) == (other.head_id, other.head_hash, other.row_count)


class Signer(Protocol):
    """Signs with a key held by Vault/OpenBao."""

    @property
    def key_name(self) -> str:
        """The signing key's name."""
        ...

    def sign(self, data: bytes) -> str:
        """A signature of `data` (`vault:v<N>:<base64>`)."""
        ...


class CheckpointStore(Protocol):
    """Where the chain head is read and checkpoints are kept."""

    def head(self, since: ChainHead | None = None) -> ChainHead | None:
        """The chain's newest row (None when empty)."""
        ...

    def newest_checkpoint(self) -> Checkpoint | None:
        """The newest stored checkpoint (None when none)."""
        ...

    def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """Store a checkpoint; False when another replica stored one for the same head."""
        ...

    def id_sequence(self) -> IdSequence:
        """The log's newest id and the state of the id sequence its rows are numbered from."""
        ...

    def segment(self, after_id: int, head: ChainHead, own: Sequence[tuple[int, bytes]], rows: int) -> list[SegmentRow]:
        """The next page (at most `rows` rows, bounded in bytes) of the chain after `after_id` up to `head`, by id.

        The fields of the rows of `own` ((id, row_hash) this process appended) are not fetched
        when shown with that hash; an empty page ends the segment.
        """
        ...

    def sever(self) -> int:
        """Close, at the socket, the connections the statements above hold now (from another thread); how many.

        The statement waiting on one raises at once; nothing in the database can catch that.
        """
        ...


def checkpoint_exporter(path: Path | None) -> Callable[[Checkpoint], None]:
    """Exports each checkpoint as a JSON log line and, with `path`, appends it to that file."""

    def export(checkpoint: Checkpoint) -> None:
        record = checkpoint.exported()
        log.info("audit checkpoint", extra={"audit_checkpoint": record})
        if path is not None:
            with path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")

    return export


def read_exported(path: Path) -> list[Checkpoint]:
    """The checkpoints exported to `path`, in file order.

    Takes the checkpoint file (one JSON object per line) as well as the service's JSON log,
    whose `audit checkpoint` lines carry one each under `audit_checkpoint`; other lines are
    skipped. A missing file is an error: verifying against nothing would prove nothing.
    """
    if not path.exists():
        raise FileNotFoundError(f"no exported checkpoints at {path}")
    checkpoints = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("audit_checkpoint"), dict):
            record = record["audit_checkpoint"]
        if isinstance(record, dict) and "head_id" in record and "signature" in record:
            checkpoints.append(Checkpoint.from_exported(record))
    return checkpoints


class AuditUpkeep:
    """Flushes the aggregated audit rows and anchors the chain, on a timer thread."""

    def __init__(
        self,
        audit: AuditLog,
        store: CheckpointStore,
        signer: Signer,
        meter: TokenizeMeter,
        refusals: RefusalAuditor,
        export: Callable[[Checkpoint], None],
        interval: float = DEFAULT_INTERVAL,
        on_exported: Callable[[Checkpoint], None] | None = None,
        on_planted: Callable[[], None] | None = None,
        genuine: Callable[[Checkpoint], bool] | None = None,
        on_sequence_tampered: Callable[[], None] | None = None,
        on_failed: Callable[[], None] | None = None,
        on_refused: Callable[[], None] | None = None,
        appended: AppendedRows | None = None,
        on_rows_missing: Callable[[int], None] | None = None,
        on_rows_unchecked: Callable[[int], None] | None = None,
        round_limit: float | None = None,
    ) -> None:
        """`on_exported` is told of each checkpoint exported, `on_planted` of each round that found a planted one.

        `on_sequence_tampered` is told of each round that found a row beyond the id sequence or the
        sequence altered to number rows out of commit order (a cache, a negative increment),
        `on_failed` of each round that failed (and is retried at the next interval), `on_refused` of
        each round whose checkpoint the database refused to store (it is exported all the same).

        `appended`: the rows this process appended, checked against the chain every round (None: not
        checked); `on_rows_missing` is told how many of them a round found missing, `on_rows_unchecked`
        how many were still remembered, never checked, when `stop()`'s last round was done.

        `genuine(checkpoint)`: whether a stored checkpoint carries a valid signature of the signing
        key (checked offline); without it, the database's checkpoints are taken at their word.

        `round_limit`: seconds a round may run before its watchdog counts it as failed, logs the
        unchecked ids and severs its database connections (default ROUND_LIMIT_INTERVALS intervals).
        """
        self._audit = audit
        self._store = store
        self._signer = signer
        self._meter = meter
        self._refusals = refusals
        self._export = export
        self._interval = interval
        self._on_exported = on_exported or (lambda checkpoint: None)
        self._on_planted = on_planted or (lambda: None)
        self._genuine = genuine or (lambda checkpoint: True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counted: ChainHead | None = None  # the last head counted: the next count starts there
        self._exported_head = 0  # the head of the last checkpoint this process exported
        self._planted_seen = 0  # the planted checkpoint's head last reported (each reported once)
        self._on_sequence_tampered = on_sequence_tampered or (lambda: None)
        self._on_failed = on_failed or (lambda: None)
        self._on_refused = on_refused or (lambda: None)
        self._refusal_seen = ""  # the last refusal logged (a refusal repeating every round is logged once)
        self._tamper_seen = (0, 1, 1)  # the planted row, cache and increment last reported (each reported once)
        self._failure_seen = ""  # the last failure logged (a failure repeating every round is logged once)
        self._sequence_unreadable_told = False  # a database before migration 0015: said once per process
        self._appended = appended
        self._on_rows_missing = on_rows_missing or (lambda count: None)
        self._on_rows_unchecked = on_rows_unchecked or (lambda count: None)
        self._missing: tuple[int, ...] = ()  # found missing, not yet named in an exported checkpoint
        self._exported: ChainHead | None = None  # the head of the last checkpoint this process exported
        self._round_limit = round_limit if round_limit is not None else ROUND_LIMIT_INTERVALS * interval
        self._watchdog = RoundWatchdog(self._round_limit, self._round_overran, repeat=interval)

    def run_once(self) -> Checkpoint | None:
        """Write the aggregated rows, then checkpoint the chain if it grew; the checkpoint made."""
        try:
            self._meter.flush_into(self._audit.append)
            self._refusals.flush_into(self._audit.append)
        except AuditChecksOverdue:  # the counts stay; this round's check reopens the appends for the next flush
            pass
        # The newest checkpoint is read before the head: a checkpoint is stored only after its
        # rows are committed, so a true one never names a row beyond a head read after it.
        newest = self._store.newest_checkpoint()
        self._check_sequence()
        # Taken before the head is read: every row remembered by then is committed, so within the head.
        appended = self._appended.remembered() if self._appended is not None else {}
        head = self._store.head(self._counted)
        self._counted = head or self._counted
        self._check_appended(head, appended)
        checkpoint = self._anchor(newest, head)
        if head is None:
            return checkpoint
        if self._missing or (appended and not self._exported_as(head)):
            checkpoint = self._export_checked_head(newest, head)
        if appended and self._appended is not None and self._exported_as(head):
            # Forgotten only now: until a checkpoint of the head they were checked against is
            # exported, the database owner can still rewrite them unseen (attack 17, finding 2).
            self._appended.forget(appended)
        return checkpoint

    def _exported_as(self, head: ChainHead) -> bool:
        """Whether this process exported a checkpoint of `head` itself (id, hash and row count)."""
        return self._exported is not None and _same_head(self._exported, head)

    def _export_checked_head(self, newest: Checkpoint | None, head: ChainHead) -> Checkpoint:
        """Export a checkpoint of `head`, the head this round checked its rows against, naming any rows missing.

        Reached when this round's anchoring exported no checkpoint of that very head: another
        replica's checkpoint anchors it (exported by that replica, or by no one: one this
        process signed, whose round was severed while the INSERT waited, and which the database
        then stored), or the head is not the one this process exported before at its id. The
        stored checkpoint is exported again when it is genuine and of exactly this head, else
        the head is signed now; either way the exported copy vouches for the chain this round
        checked, and the rows can be forgotten.
        """
        if head.head_id <= self._exported_head and not self._exported_as(head):
            log.error(
                "the audit log's head, row %d, is not the head this process exported a checkpoint of at row %d"
                " (the row was changed or later rows removed since): it is exported again as it is now. Report it"
                " to the security team and run audit-verify against the exported checkpoints",
                head.head_id,
                self._exported_head,
            )
        if newest is not None and _same_head(newest.head, head) and self._genuine(newest):
            checkpoint = newest.anchor()
        else:
            checkpoint = Checkpoint(head, self._signer.key_name, self._signer.sign(head.message()))
        self._export_and_note(checkpoint)
        return checkpoint

    def _check_appended(self, head: ChainHead | None, appended: dict[int, Link]) -> None:
        """Check that the chain up to `head` holds every row of `appended` (see the module's doc).

        The rows stay remembered (`run_once` forgets them once that head is exported); rows found
        missing again before the checkpoint naming them was exported are counted and logged once.
        """
        if self._appended is None or not appended:
            return
        check = SegmentCheck(head, appended, _yield_interpreter)
        after = min(appended) - 1
        while head is not None and after < head.head_id:  # page by page: bounded in memory (review 17 #1)
            page = self._store.segment(after, head, check.appended_after(after, _PAGE_ROWS), _PAGE_ROWS)
            if not page or not check.add(page):
                break
            after = page[-1].record_id
        missing = tuple(i for i in check.missing() if i not in self._missing)
        if not missing:
            return
        self._on_rows_missing(len(missing))
        self._missing = tuple(sorted({*self._missing, *missing}))
        more = f" and {len(missing) - 50} more" if len(missing) > 50 else ""
        shown = ", ".join(str(i) for i in missing[:50]) + more
        log.error(
            "%d audit row(s) this service appended are not in the chain up to row %s (ids %s): the database wrote"
            " them elsewhere than vault.audit_log (a view, rule or trigger diverting them) or changed them, and"
            " the calls were audited nowhere. They are named in the next exported checkpoint; report it to the"
            " security team and run audit-verify against the exported checkpoints%s",
            len(missing),
            head.head_id if head else "(none)",
            shown,
            _broken(check.broken_at),
        )

    def _anchor(self, newest: Checkpoint | None, head: ChainHead | None) -> Checkpoint | None:
        """Sign, store and export `head` unless a checkpoint already anchors it; the checkpoint exported."""
        last = newest.head.head_id if newest else 0
        if last > (head.head_id if head else 0):
            return self._anchor_beside_a_planted_checkpoint(head, last, "beyond the audit log's head")
        if head is None:
            return None
        if head.head_id <= last:  # the database says the head is anchored: by a checkpoint that vouches for it?
            assert newest is not None
            if last <= self._exported_head or self._vouches(newest, head):
                return None
            return self._anchor_beside_a_planted_checkpoint(
                head, last, "at the head without the signing key's signature"
            )
        checkpoint = Checkpoint(head, self._signer.key_name, self._signer.sign(head.message()))
        try:
            stored = self._store.add_checkpoint(checkpoint)
        except StorageError as error:  # refused, not unreachable (DatabaseUnavailable: the round is postponed)
            if self._stored_by_another(head):  # a replica's genuine checkpoint, stored and exported, covers it
                return None
            return self._anchor_despite_a_refusal(checkpoint, error)
        self._refusal_seen = ""
        if not stored:
            if self._stored_by_another(head):
                return None
            self._on_planted()
            log.error(
                "the database did not store the audit checkpoint of row %d and holds none that vouches for it"
                " (a rule or trigger on vault.audit_checkpoints?); it is exported anyway. Report it to the"
                " security team and run audit-verify",
                head.head_id,
            )
        self._export_and_note(checkpoint)
        return checkpoint

    def _stored_by_another(self, head: ChainHead) -> bool:
        """Whether a refused checkpoint of `head` was refused because another replica's genuine one covers it."""
        newest = self._store.newest_checkpoint()
        return newest is not None and newest.head.head_id >= head.head_id and self._vouches(newest, head)

    def _check_sequence(self) -> None:
        """Report a row beyond the audit id sequence, or a sequence that numbers rows out of commit order.

        The head is taken within the sequence (see the module's doc); a sequence with a cache
        hands each pooled session a block of ids, so rows committed later can take lower ids
        than the head already counted and stay out of every checkpoint.
        """
        try:
            sequence = self._store.id_sequence()
        except VaultError as error:  # e.g. a database before migration 0015: checkpoints go on regardless
            self._on_sequence_tampered()  # counted every round: the alert stays up until the migration runs
            if not self._sequence_unreadable_told:
                self._sequence_unreadable_told = True
                log.error(
                    "cannot check the audit id sequence (%s); apply the migrations (0015). Counted in"
                    " tokenvault_audit_id_sequence_tampered every round until then (logged once)",
                    error,
                )
            return
        if not sequence.rows_beyond() and sequence.numbers_in_order():
            return
        self._on_sequence_tampered()
        seen = (sequence.newest_row if sequence.rows_beyond() else 0, sequence.cache, sequence.increment)
        if seen == self._tamper_seen:
            return
        self._tamper_seen = seen
        if sequence.rows_beyond():
            log.error(
                "the audit log holds row %d, beyond the id sequence's last value %d: the database numbers every"
                " row from that sequence, so the row was written behind the service's back. Checkpoints go on"
                " for the rows within the sequence; report it to the security team and run audit-verify",
                sequence.newest_row,
                sequence.last_value,
            )
        if not sequence.numbers_in_order():
            log.error(
                "the audit id sequence vault.audit_log_id_seq was altered (cache %d, increment %d): rows may be"
                " numbered out of commit order and escape the checkpoints. Report it to the security team, run"
                " audit-verify, and restore it (ALTER SEQUENCE vault.audit_log_id_seq CACHE 1 INCREMENT 1)",
                sequence.cache,
                sequence.increment,
            )

    def _vouches(self, stored: Checkpoint, head: ChainHead) -> bool:
        """Whether another replica's `stored` checkpoint really anchors `head` (signed, and naming it)."""
        same_head = stored.head.head_id != head.head_id or (
            stored.head.head_hash == head.head_hash and stored.head.row_count == head.row_count
        )
        return same_head and self._genuine(stored)

    def _anchor_beside_a_planted_checkpoint(
        self, head: ChainHead | None, planted: int, where: str
    ) -> Checkpoint | None:
        """Sign and export `head` without storing it: the database's newest checkpoint (`planted`) is not genuine."""
        self._on_planted()
        if planted != self._planted_seen:
            self._planted_seen = planted
            log.error(
                "the database's newest audit checkpoint names row %d, %s (row %d):"
                " it was written behind the service's back, and the database refuses every checkpoint after it."
                " Checkpoints go on in the exported copy only; report it to the security team and run audit-verify",
                planted,
                where,
                head.head_id if head else 0,
            )
        if head is None or head.head_id <= self._exported_head:
            return None
        checkpoint = Checkpoint(head, self._signer.key_name, self._signer.sign(head.message()))
        self._export_and_note(checkpoint)
        return checkpoint

    def _anchor_despite_a_refusal(self, checkpoint: Checkpoint, error: StorageError) -> Checkpoint | None:
        """Export `checkpoint` though the database refused to store it (each head once), and report the refusal.

        The error names the database's error class only (see the Postgres adapter), never row data.
        """
        self._on_refused()
        head_id = checkpoint.head.head_id
        if str(error) != self._refusal_seen:
            self._refusal_seen = str(error)
            log.error(
                "the database refused to store the audit checkpoint of row %d (%s); it is exported anyway, and"
                " every later one while the refusal lasts. Report it to the security team and run audit-verify"
                " against the exported checkpoints",
                head_id,
                error,
            )
        if head_id <= self._exported_head:
            return None
        self._export_and_note(checkpoint)
        return checkpoint

    def _export_and_note(self, checkpoint: Checkpoint) -> None:
        if self._missing:  # named under a signature of their own: the stored checkpoint stays the head's alone
            checkpoint = replace(checkpoint, missing=self._missing)
            checkpoint = replace(checkpoint, missing_signature=self._signer.sign(checkpoint.missing_message()))
        self._export(checkpoint)
        self._missing = ()
        self._exported_head = checkpoint.head.head_id
        self._exported = checkpoint.head
        self._on_exported(checkpoint)

    def start(self) -> None:
        """Run every `interval` seconds on a daemon thread until `stop()`, each round under the watchdog."""
        self._watchdog.start(tick=self._interval / 2)
        self._thread = threading.Thread(target=self._loop, name="audit-upkeep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, then flush and checkpoint one last time; report the rows left unchecked.

        The unchecked ids are logged before that last round, which may hang or be cut short by a
        SIGKILL (review 17, finding 2), and the round is skipped while the thread is still inside
        a hung one: two rounds never run at once.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        before = self._appended.remembered() if self._appended is not None else {}
        if before:
            log.warning(
                "stopping with %d audit row(s) this service appended (ids %d to %d) not yet checked against the"
                " chain; the last audit upkeep round checks them now",
                len(before),
                min(before),
                max(before),
            )
        if self._thread is not None and self._thread.is_alive():
            log.error("the audit upkeep round is still running (hung?) as the service stops: no last round")
        else:
            self._safely()  # watched too: a last round the database holds is severed, not waited for
        self._watchdog.stop()
        left = self._appended.remembered() if self._appended is not None else {}
        if left:
            self._on_rows_unchecked(len(left))
            log.error(
                "%d audit row(s) this service appended (ids %d to %d) were never checked against the chain: the last"
                " audit upkeep round failed too (see above), and they are forgotten as the service stops. Report it"
                " to the security team and run audit-verify; check that these ids are in vault.audit_log",
                len(left),
                min(left),
                max(left),
            )
        elif before:
            log.info("the last audit upkeep round checked the %d row(s) left", len(before))

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._safely()

    def _safely(self) -> None:
        """One round, timed by the watchdog; whatever it raises is logged, counted and left to the next round.

        Whether it failed for want of any database connection (DatabaseUnreachable: an outage, not
        a query error) is noted on the appended rows, so the refusals and the metrics say so
        (review 17 #4); any other outcome clears it. A round the watchdog reported as overrunning
        was counted then, not again when it ends.
        """
        unreachable, failed = False, True
        self._watchdog.begin()
        try:
            self.run_once()
            failed = False
        except VaultError as error:  # Vault or the database away: the next round catches up
            unreachable = isinstance(error, DatabaseUnreachable)
            log.warning("audit upkeep postponed: %s", error)
        except Exception as error:  # the thread must outlive any one round, whatever fails in it
            # Database errors reach here translated (VaultError, above) and the checkpoint
            # file's OSError names the path only, so the message carries no audited values.
            failure = f"{type(error).__name__}: {error}"
            if failure != self._failure_seen:
                self._failure_seen = failure
                log.error("audit upkeep round failed (%s); retrying every interval", failure)
            return
        finally:
            if not self._watchdog.end() and failed:
                self._on_failed()
            if self._appended is not None:
                self._appended.database_unreachable = unreachable
        self._failure_seen = ""

    def _round_overran(self, seconds: float, first: bool) -> None:
        """The watchdog's report of a round running `seconds`: count it failed, sever its connections, log the ids.

        Called again every interval while the round still runs (each counted, so the alert on
        failing rounds stays up); logged once per round.
        """
        self._on_failed()
        severed = self._store.sever()
        if not first:
            return
        waiting = self._appended.remembered() if self._appended is not None else {}
        unchecked = (
            f"; {len(waiting)} audit row(s) this service appended (ids {min(waiting)} to {max(waiting)}) wait"
            " unchecked - check that these ids are in vault.audit_log"
            if waiting
            else ""
        )
        log.error(
            "audit upkeep round failed: held for %.0f s (the bound is %.0f s); the %d database connection(s) its"
            " statements held are closed, so the next round starts on a fresh one. Something in the database holds"
            " the round (a lock on an audit table, or a function catching the statement timeout): report it to the"
            " security team%s",
            seconds,
            self._round_limit,
            severed,
            unchecked,
        )
