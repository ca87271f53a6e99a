"""The audit trail's background upkeep: aggregated rows, and signed, exported checkpoints.

Every `interval` seconds (and once more at shutdown) it
1. writes the tokenize meter's per-client rows and the throttled refusals' counts;
2. if the chain has grown since the last checkpoint, signs its head with the Transit signing key
   (sign-only for the service), stores the checkpoint in vault.audit_checkpoints and exports it
   outside Postgres (a JSON log line, and a line in the checkpoint file when one is configured):
   service/checkpoint_anchor.py, which also tells planted checkpoints, refusals to store one and
   a tampered id sequence. What one round does is service/upkeep_round.py.
So only rows newer than the last checkpoint — at most `interval` seconds of them while the
service runs — are not anchored yet.

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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from vault_service.domain.anchoring import AppendedRows, WaitingFor
from vault_service.domain.checkpoints import Checkpoint
from vault_service.domain.database_probe import ProbeAnswer
from vault_service.domain.errors import DatabaseUnreachable, KeysUnavailable, VaultError
from vault_service.domain.pending_rows import PendingNote
from vault_service.service.checkpoint_anchor import CheckpointAnchor
from vault_service.service.checkpoint_ports import CheckpointStore, Signer
from vault_service.service.erase_commitments import EraseCommitments
from vault_service.service.metering import RefusalAuditor, TokenizeMeter
from vault_service.service.ports import AuditLog
from vault_service.service.round_watchdog import RoundWatchdog
from vault_service.service.upkeep_round import UpkeepRound, yield_interpreter

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 2.0
ROUND_LIMIT_INTERVALS = 6
"""Intervals a round may go without progress (a page of its segment read) before its watchdog fails it.

Its statements' server-side timeout is 5 intervals."""
ROUND_CEILING_LIMITS = 20
"""Round limits a whole round may run, however steadily it progresses, before its watchdog fails it (R18-4).

Generous: a round cut there is started over by the next (R19-1), so it must leave a long segment time to end."""


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
        before_round: Callable[[], None] | None = None,
        commit_erasures: bool = False,
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
        key (checked offline); without it, the database's checkpoints are taken at their word - so it is
        required with `commit_erasures` (ValueError otherwise: review 47, R47-13).

        `round_limit`: seconds a round may go without progress (its start, or a page of its segment
        read) before its watchdog counts it as failed, logs the unchecked ids and severs its database
        connections (default ROUND_LIMIT_INTERVALS intervals); a whole round may run
        ROUND_CEILING_LIMITS limits.

        `note_pending`: exports the note of the rows of `appended` not noted before, at the start
        of each round (None: no notes).

        `on_probe_refused` is told of each round that got no pooled connection and whose probe (a
        connection of its own, outside the pool) the database's server refused: not an outage, and
        with the pool exhausted a sign that someone keeps the vault out (review 19, R19-7).

        `commit_erasures`: sign each head with its commitment to the erase rows up to it, once walked (attack 46,
        A46-3: service/erase_commitments.py); the service's upkeep does, an admin command's one round does not.

        `before_round` runs before each round of the thread (the service's: end the sessions holding
        the audit chain's lock for seconds, attack 26 F2); whatever it raises is logged and the round runs.
        """
        if commit_erasures and genuine is None:
            raise ValueError(
                "commit_erasures needs genuine: the erase-row walk resumes from a stored checkpoint only under a valid"
                " signature (review 47, R47-13)"
            )
        self._store = store
        self._interval = interval
        anchor = CheckpointAnchor(
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
        self._on_failed = on_failed or (lambda: None)
        self._failure_seen = ""  # the last failure logged (a failure repeating every round is logged once)
        self._appended = appended
        self._on_rows_unchecked = on_rows_unchecked or (lambda count: None)
        self._round_limit = round_limit if round_limit is not None else ROUND_LIMIT_INTERVALS * interval
        self._round_ceiling = ROUND_CEILING_LIMITS * self._round_limit
        self._watchdog = RoundWatchdog(
            self._round_limit, self._round_overran, repeat=interval, ceiling=self._round_ceiling
        )
        self._round = UpkeepRound(
            audit,
            store,
            meter,
            refusals,
            anchor,
            appended,
            on_rows_missing or (lambda count: None),
            note_pending,
            self._watchdog.progress,
            EraseCommitments(store, genuine, self._watchdog.progress, yield_interpreter)
            if commit_erasures and genuine is not None
            else None,
        )
        self._on_probe_refused = on_probe_refused or (lambda: None)
        self._before_round = before_round

    def run_once(self) -> Checkpoint | None:
        """Write the aggregated rows, then checkpoint the chain if it grew; the checkpoint made."""
        return self._round.run()

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
            self._clear_the_way()
            self._safely()

    def _clear_the_way(self) -> None:
        """Run `before_round`; an error is logged (its type only) and left to the next round."""
        if self._before_round is None:
            return
        try:
            self._before_round()
        except Exception as error:
            log.warning(
                "the check for sessions holding the audit chain's lock failed", extra={"error": type(error).__name__}
            )

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
        unreachable, unsigned, failed = False, False, True
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
        except KeysUnavailable as error:  # a Transit call (the checkpoint's signature): Vault away or refusing
            unsigned = True
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
                self._appended.signer_unavailable = unsigned
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
