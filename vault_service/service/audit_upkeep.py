"""The audit trail's background upkeep: aggregated rows, and signed, exported checkpoints.

Every `interval` seconds (and once more at shutdown) it
1. writes the tokenize meter's per-client rows and the throttled refusals' counts;
2. if the chain has grown since the last checkpoint, signs its head with the Transit signing key
   (sign-only for the service), stores the checkpoint in vault.audit_checkpoints and exports it
   outside Postgres (a JSON log line, and a line in the checkpoint file when one is configured):
   service/checkpoint_anchor.py, which also tells planted checkpoints, refusals to store one and
   a tampered id sequence.
So only rows newer than the last checkpoint — at most `interval` seconds of them while the
service runs — are not anchored yet.

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
round under a watchdog timed in this process (service/round_watchdog.py): ROUND_LIMIT_INTERVALS
intervals without progress (each page of the segment read re-arms it), or ROUND_CEILING_LIMITS
such limits in all, and the round is counted as failed, the unchecked ids are logged, and its
database connections are closed at the socket - a timeout or a cancel the database owner can
trap (attack 17, finding 3), a closed socket he cannot. Bounding the lack of progress, not the
round's length, lets a round over a long segment the other replicas keep extending run to its end
(review 18, R18-4). A round cut off is not resumed: the next one checks the segment from this
replica's oldest remembered row again, so a row of its own the database owner deleted or rewrote
meanwhile is found whatever he re-linked (review 19, R19-1).

A round that fails for any reason (the database or Vault away, a row it cannot read, the
checkpoint file unwritable) is logged by its error's type and message, counted, and retried
at the next interval: the thread never ends before `stop()`. Rows a failing round leaves
unchecked are not dropped: once the oldest is older than the bound (TOKENVAULT_AUDIT_UNCHECKED_SECONDS)
the appends, so the calls, are refused until a round checks them (domain/anchoring.py); the
upkeep's own aggregated rows wait for that round. Rows still unchecked after `stop()`'s last
round are logged (count, lowest and highest id) and counted (review 16, finding 1).

Before its first statement, each round exports a note of the rows appended since the last note
(id ranges, count, a digest over each id and row hash; domain/pending_rows.py) to where the
checkpoints go, so a process the database owner kills during the round (a huge message on one
of its statements taking it past its memory limit: retest 17, finding A) has named them outside
the database, and `audit verify --exported` requires them in the log as appended. One line per
round at most, none when nothing new was appended.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from vault_service.domain.anchoring import (
    SEGMENT_PAGE_ROWS,
    AppendedRows,
    AuditChecksOverdue,
    Link,
    SegmentCheck,
    WaitingFor,
)
from vault_service.domain.checkpoints import ChainHead, Checkpoint
from vault_service.domain.database_probe import ProbeAnswer
from vault_service.domain.errors import DatabaseUnreachable, VaultError
from vault_service.domain.pending_rows import PendingNote
from vault_service.service.checkpoint_anchor import CheckpointAnchor
from vault_service.service.checkpoint_ports import CheckpointStore, Signer
from vault_service.service.metering import RefusalAuditor, TokenizeMeter
from vault_service.service.ports import AuditLog
from vault_service.service.round_watchdog import RoundWatchdog

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 2.0
ROUND_LIMIT_INTERVALS = 6
"""Intervals a round may go without progress (a page of its segment read) before its watchdog fails it.

Its statements' server-side timeout is 5 intervals."""
ROUND_CEILING_LIMITS = 20
"""Round limits a whole round may run, however steadily it progresses, before its watchdog fails it (R18-4).

Generous: a round cut there is started over by the next (R19-1), so it must leave a long segment time to end."""
_PAGE_ROWS = SEGMENT_PAGE_ROWS
"""Rows per page of a round's segment read (the serving threads run during each read)."""


_POOL_EXHAUSTED = (
    "no connection of the vault's pool came free within its timeout, while the database answers a connection of"
    " its own: every pooled connection is busy - statements held by a lock (on vault.tokens, say, by the database"
    " owner) or the load - not a database outage. Look for the lock (pg_locks, pg_stat_activity) and report it to"
    " the security team"
)
"""A round's failure for want of a pooled connection while the database answers a probe (review 18, R18-12)."""
_POOL_EXHAUSTED_PROBE_REFUSED = (
    "no connection of the vault's pool came free within its timeout, and the database's server refused a connection"
    " of the vault's own outside the pool (a connection limit of the database or the role, the CONNECT privilege or"
    " the role's LOGIN taken away, pg_hba): it answers, so not an outage, but every pooled connection is busy while"
    " the vault may open no other - how the database owner makes his own lock on vault.tokens look like one. Check"
    " pg_database.datconnlimit, pg_roles.rolconnlimit and rolcanlogin, the CONNECT grants on the database and the"
    " locks (pg_locks, pg_stat_activity), and report it to the security team"
)
"""A round's failure for want of a pooled connection while the server refuses the probe (review 19, R19-7)."""


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
        note_pending: Callable[[PendingNote], None] | None = None,
        on_probe_refused: Callable[[], None] | None = None,
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

        `round_limit`: seconds a round may go without progress (its start, or a page of its segment
        read) before its watchdog counts it as failed, logs the unchecked ids and severs its database
        connections (default ROUND_LIMIT_INTERVALS intervals); a whole round may run
        ROUND_CEILING_LIMITS limits.

        `note_pending`: exports the note of the rows of `appended` not noted before, at the start
        of each round (None: no notes).

        `on_probe_refused` is told of each round that got no pooled connection and whose probe (a
        connection of its own, outside the pool) the database's server refused: not an outage, and
        with the pool exhausted a sign that someone keeps the vault out (review 19, R19-7).
        """
        self._audit = audit
        self._store = store
        self._meter = meter
        self._refusals = refusals
        self._interval = interval
        self._anchor = CheckpointAnchor(
            store,
            signer,
            export,
            genuine or (lambda checkpoint: True),
            on_exported or (lambda checkpoint: None),
            on_planted or (lambda: None),
            on_sequence_tampered or (lambda: None),
            on_refused or (lambda: None),
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._counted: ChainHead | None = None  # the last head counted: the next count starts there
        self._on_failed = on_failed or (lambda: None)
        self._failure_seen = ""  # the last failure logged (a failure repeating every round is logged once)
        self._appended = appended
        self._on_rows_missing = on_rows_missing or (lambda count: None)
        self._on_rows_unchecked = on_rows_unchecked or (lambda count: None)
        self._round_limit = round_limit if round_limit is not None else ROUND_LIMIT_INTERVALS * interval
        self._round_ceiling = ROUND_CEILING_LIMITS * self._round_limit
        self._watchdog = RoundWatchdog(
            self._round_limit, self._round_overran, repeat=interval, ceiling=self._round_ceiling
        )
        self._note_pending = note_pending
        self._noted: set[int] = set()  # remembered rows already named in an exported note
        self._note_failing = False  # the last note could not be written (logged once while it fails)
        self._on_probe_refused = on_probe_refused or (lambda: None)

    def run_once(self) -> Checkpoint | None:
        """Write the aggregated rows, then checkpoint the chain if it grew; the checkpoint made."""
        self._note_appended()  # before any statement: the database owner may kill the process during one
        try:
            self._meter.flush_into(self._audit.append)
            self._refusals.flush_into(self._audit.append)
        except AuditChecksOverdue:  # the counts stay; this round's check reopens the appends for the next flush
            pass
        # The newest checkpoint is read before the head: a checkpoint is stored only after its
        # rows are committed, so a true one never names a row beyond a head read after it.
        newest = self._store.newest_checkpoint()
        self._anchor.check_sequence()
        # Taken before the head is read: every row remembered by then is committed, so within the head.
        appended = self._appended.remembered() if self._appended is not None else {}
        head = self._store.head(self._counted)
        self._counted = head or self._counted
        if appended and self._appended is not None:
            self._appended.checking()
        self._check_appended(head, appended)
        if appended and head is not None and self._appended is not None:
            self._appended.checked(appended)  # what the refusals say until the export (R18-11)
        checkpoint = self._anchor.anchor(newest, head)
        if head is None:
            return checkpoint
        if self._anchor.missing or (appended and not self._anchor.exported_as(head)):
            checkpoint = self._anchor.export_checked_head(newest, head)
        if appended and self._appended is not None and self._anchor.exported_as(head):
            # Forgotten only now: until a checkpoint of the head they were checked against is
            # exported, the database owner can still rewrite them unseen (attack 17, finding 2).
            self._appended.forget(appended)
        return checkpoint

    def _note_appended(self) -> None:
        """Export a note of the remembered rows no note named yet (retest 17, finding A); nothing when none.

        A note the checkpoint file refuses (OSError; its log line is out already) is logged and tried
        again next round, and the round goes on: its checkpoint's export then fails on the same file,
        and the refusals say the rows were checked but not anchored (R18-11).
        """
        if self._appended is None or self._note_pending is None:
            return
        remembered = self._appended.remembered()
        self._noted.intersection_update(remembered)  # forgotten rows need no memory of their note
        new = {row_id: link[1] for row_id, link in remembered.items() if row_id not in self._noted}
        if not new:
            return
        try:
            self._note_pending(PendingNote.of(new))
        except OSError as error:  # the file's error names its path only
            if not self._note_failing:
                log.error("audit rows pending could not be noted in the checkpoint file (%s); retried", error)
            self._note_failing = True
            return
        self._note_failing = False
        self._noted.update(new)

    def _check_appended(self, head: ChainHead | None, appended: dict[int, Link]) -> None:
        """Check that the chain up to `head` holds every row of `appended` (see the module's doc).

        The rows stay remembered (`run_once` forgets them once that head is exported); rows found
        missing again before the checkpoint naming them was exported are counted and logged once.
        """
        if self._appended is None or not appended:
            return
        # Always from the oldest remembered row, never from where a round cut off got to: a mark
        # saved then vouches for nothing the owner changed below it since (review 19, R19-1).
        check = self._read_segment(head, SegmentCheck(head, appended, _yield_interpreter), min(appended) - 1)
        missing = tuple(i for i in check.missing() if i not in self._anchor.missing)
        if not missing:
            return
        self._on_rows_missing(len(missing))
        self._anchor.missing = tuple(sorted({*self._anchor.missing, *missing}))
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

    def _read_segment(self, head: ChainHead | None, check: SegmentCheck, after: int) -> SegmentCheck:
        """Read the segment after `after` up to `head` into `check`, page by page; `check`.

        Each page re-arms the watchdog: a held statement is bounded, not the segment's length (R18-4).
        """
        while head is not None and after < head.head_id:  # page by page: bounded in memory (review 17 #1)
            page = self._store.segment(after, head, check.appended_after(after, _PAGE_ROWS), _PAGE_ROWS)
            if not page or not check.add(page):
                break
            after = page[-1].record_id
            self._watchdog.progress()  # a page read: the watchdog bounds a held statement, not the segment
        return check

    def run_once_watched(self) -> Checkpoint | None:
        """One round as `run_once`, for a process that runs no upkeep thread (the admin commands'), under the watchdog.

        A round the database holds past the limit - a lock no statement timeout ends, or a function
        trapping it - is counted failed, its unchecked ids logged and its connections closed at the
        socket, so it raises here instead of holding the command for ever (attack 17, finding 3).
        """
        self._watchdog.start(tick=self._interval / 2)
        self._watchdog.begin()
        try:
            return self.run_once()
        finally:
            self._watchdog.end()
            self._watchdog.stop()

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
                " chain and anchored in an exported checkpoint; the last audit upkeep round checks them now",
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
        if left and self._appended is not None:
            self._on_rows_unchecked(len(left))
            what = (
                "were checked against the chain but never anchored: no checkpoint of it could be exported"
                if self._appended.waiting_for is WaitingFor.EXPORT
                else "were never checked against the chain"
            )
            log.error(
                "%d audit row(s) this service appended (ids %d to %d) %s; the last audit upkeep round failed too (see"
                " above), and they are forgotten as the service stops. Report it to the security team and run"
                " audit-verify; check that these ids are in vault.audit_log",
                len(left),
                min(left),
                max(left),
                what,
            )
        elif before:
            log.info("the last audit upkeep round checked the %d row(s) left", len(before))

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._safely()

    def _safely(self) -> None:
        """One round, timed by the watchdog; whatever it raises is logged, counted and left to the next round.

        Whether it failed for want of any database connection (DatabaseUnreachable, and the
        database answering no probe outside the pool either: an outage, not a query error) is noted
        on the appended rows, so the refusals and the metrics say so (review 17 #4); any other
        outcome clears it. A pool exhausted while the database answers (every pooled connection
        held, a lock on vault.tokens say) is a failed round like any other, so the tampering alerts
        are not held (review 18, R18-12); so is one while its server refuses the probe (a
        connection limit the database owner set: review 19, R19-7), told apart in the log and to
        `on_probe_refused`. A round the watchdog reported as overrunning was counted then, not
        again when it ends.
        """
        unreachable, failed = False, True
        self._watchdog.begin()
        try:
            self.run_once()
            failed = False
        except DatabaseUnreachable as error:  # no pooled connection: an outage, or the pool exhausted
            answer = self._probe_database()
            unreachable = not answer.answers
            if answer is ProbeAnswer.REFUSED:
                self._on_probe_refused()
                self._log_failure(_POOL_EXHAUSTED_PROBE_REFUSED)
                return
            if not unreachable:
                self._log_failure(_POOL_EXHAUSTED)
                return
            log.warning("audit upkeep postponed: %s", error)
        except VaultError as error:  # Vault or the database away: the next round catches up
            log.warning("audit upkeep postponed: %s", error)
        except Exception as error:  # the thread must outlive any one round, whatever fails in it
            # Database errors reach here translated (VaultError, above) and the checkpoint
            # file's OSError names the path only, so the message carries no audited values.
            self._log_failure(f"{type(error).__name__}: {error}")
            return
        finally:
            if not self._watchdog.end() and failed:
                self._on_failed()
            if self._appended is not None:
                self._appended.database_unreachable = unreachable
        self._failure_seen = ""

    def _log_failure(self, failure: str) -> None:
        """Log a failed round's cause, once while the same cause repeats round after round."""
        if failure != self._failure_seen:
            self._failure_seen = failure
            log.error("audit upkeep round failed (%s); retrying every interval", failure)

    def _probe_database(self) -> ProbeAnswer:
        """How the database meets the store's probe (a connection outside the pool); SILENT if the probe fails."""
        try:
            return self._store.probe_database()
        except Exception as error:  # a probe that cannot tell: taken as no answer, the outage wording
            log.info("the audit upkeep's database probe failed (%s)", type(error).__name__)
            return ProbeAnswer.SILENT

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
            "audit upkeep round failed: held for %.0f s (the bounds are %.0f s without progress, %.0f s in all); the"
            " %d database connection(s) its statements held are closed, so the next round starts on a fresh one."
            " Something in the database holds the round (a lock on an audit table, or a function catching the"
            " statement timeout): report it to the security team%s",
            seconds,
            self._round_limit,
            self._round_ceiling,
            severed,
            unchecked,
        )
