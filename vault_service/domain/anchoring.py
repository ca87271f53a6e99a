"""Anchoring each audit row the service appended, not only the chain's head.

A signed checkpoint vouches for the chain up to its head: for whatever rows the database shows
the checkpoint round. A row the database never put in the chain - the insert diverted by a view
or a rule, and shown only to the append's own checks - is anchored nowhere, and audit-verify
reports the log intact without it (insider round 15, finding 1). So the service remembers the
(id, row_hash) of every row it appended, each hash first checked against the event it wrote,
and every checkpoint round checks that the chain segment up to the head it is about to sign
holds each of them. One it does not is reported (ids only) and named in the signed, exported
checkpoint, so audit-verify with the exported copy reports it.

Why showing the missing row to the segment read too does not help the database owner: each
row's hash covers its fields and the hash before it, so the segment, checked backwards from
the head that is then signed, is the one chain that head descends from. A row shown in it is
a row of the signed chain, with the fields the service wrote; audit-verify must then find it in
the log, or the chain breaks at the checkpoint. See docs/threat-model.md.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Container, Iterable

from vault_service.domain.audit import (
    AuditEvent,
    AuditRecord,
    chain_hash_v2,
)
from vault_service.domain.errors import AuditUnavailable

log = logging.getLogger(__name__)

Link = tuple[bytes, bytes]
"""A row's (prev_hash, row_hash)."""

DEFAULT_REMEMBERED_ROWS = 200_000
"""Rows remembered until a checkpoint round checks them (~25 MB at most; a round drains them every few seconds);
at the bound appends are refused."""


def stored_as_written(record: AuditRecord, event: AuditEvent) -> bool:
    """Whether `record` (the row an append returned) is `event` as written, chained by the database (hash v2)."""
    return record.hash_version == 2 and record.row_hash == chain_hash_v2(
        record.prev_hash, record.record_id, record.at, event
    )


class WaitingFor(enum.Enum):
    """What the oldest row this process appended still waits for, as the upkeep's rounds left it (review 18, R18-11).

    A row is forgotten only once a checkpoint of a head it was checked against is exported
    (attack 17, finding 2), so a row can wait with its check done: the export keeps failing (the
    checkpoint file's volume full or read-only, the checkpoint INSERT held).
    """

    CHECK = "the audit upkeep's check"
    """No round has checked it against the chain yet (the rounds fail before, or have not run)."""
    EXPORT = "the audit upkeep's export of a checkpoint anchoring them (they were checked against the chain)"
    """A round checked it against the chain, but no checkpoint of that head could be exported yet."""


class AuditChecksOverdue(AuditUnavailable):
    """The audit rows this process appended have gone unchecked too long, or too many of them: appends are refused.

    A round that never succeeds leaves the rows it should check in memory, unanchored (review
    16, finding 1: the database owner can make one replica's segment read fail); the vault fails
    closed rather than serve calls whose rows nothing checks.

    `reason` says why, on its own (what is logged); the message adds what the caller can do.
    `database_unreachable`: the upkeep's latest round failed because no connection to the vault's
    database could be had (an outage: review 17 #4), so the message says that and does not send
    the caller to the security team. `waiting_for`: whether the rows still wait for their check,
    or were checked and wait for their checkpoint's export (review 18, R18-11).
    """

    def __init__(
        self,
        reason: str,
        database_unreachable: bool = False,
        waiting_for: WaitingFor = WaitingFor.CHECK,
        signer_unavailable: bool = False,
    ) -> None:
        if signer_unavailable and not database_unreachable:
            advice = (
                "Vault (OpenBao) does not sign the audit upkeep's checkpoints - away (health"
                " tokenvault.dependency.vault NOT_SERVING: this clears by itself once it answers) or refusing the"
                " audit signing key (its policy, the key missing: health stays SERVING; fix them), the vault's log"
                " says which: reveals stay refused until it signs again; tokenization goes on (alert"
                " AuditUpkeepFailing)"
            )
        elif database_unreachable:
            advice = (
                "The audit upkeep cannot reach the vault's database (no connection could be had): this clears by"
                " itself once the database is back (alert AuditDatabaseUnreachable)"
            )
        elif waiting_for is WaitingFor.EXPORT:
            advice = (
                "The audit upkeep checked them against the chain but cannot export a checkpoint anchoring them: the"
                " vault's log says why (\"audit upkeep round failed\"; the checkpoint file's volume full or read-only,"
                " or the checkpoint table held); this clears once a checkpoint is exported (alert AuditUpkeepFailing)"
            )
        else:
            advice = (
                "If the database or Vault is away, this clears by itself once the upkeep can read the database"
                " again; if it persists, tell the security team (alert AuditUpkeepFailing: the vault's log says"
                " why its audit upkeep rounds fail)"
            )
        super().__init__(f"{reason}, so the call was refused until the upkeep checks and anchors them. {advice}")
        self.reason = reason
        self.database_unreachable = database_unreachable
        self.waiting_for = waiting_for
        self.signer_unavailable = signer_unavailable


class AppendedRows:
    """The id and (prev_hash, row_hash) of the rows this process appended that no checkpoint round has checked yet.

    Fails closed: `check_open` refuses (AuditChecksOverdue) once the oldest remembered row is
    older than `max_age` seconds (None: no age bound, for processes with no upkeep) or `limit`
    rows are remembered; the appends then refused are counted through `on_refused`. A row
    already written is always remembered. Thread-safe: appends add, the upkeep thread takes.

    Evidence before a kill (review 17, finding 1): once the oldest row is older than `warn_age`
    seconds, `check_open` logs a WARNING once per stretch naming the unchecked ids (count,
    lowest, highest; ids only), so a process killed later (OOM, SIGKILL) still leaves them in
    the log outside the database. `oldest_age` gives the age for a gauge.
    """

    def __init__(
        self,
        limit: int = DEFAULT_REMEMBERED_ROWS,
        max_age: float | None = None,
        on_refused: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        warn_age: float | None = None,
    ) -> None:
        self._limit = limit
        self.max_age = max_age
        self.warn_age = warn_age
        self._warned = False  # the early warning is logged once per stretch of old rows
        self._rows: OrderedDict[int, tuple[Link, float]] = OrderedDict()  # in the order remembered: oldest first
        self._lock = threading.Lock()
        self.on_refused = on_refused or (lambda count: None)
        self._clock = clock
        self.database_unreachable = False
        """Whether the upkeep's latest round failed for want of any database connection (set by the upkeep)."""
        self.signer_unavailable = False
        """Whether the upkeep's latest round failed at a Transit call: Vault away or refusing (set by the upkeep).

        The rows then wait for a checkpoint Vault cannot sign: the refusal says so, rather than sending the
        caller to the checkpoint file's volume (chaos 50, V50-2)."""
        self.waiting_for = WaitingFor.CHECK
        """What the oldest remembered row waits for (set by the upkeep: `checked`, and back at `forget`)."""

    def check_open(self) -> None:
        """Raise AuditChecksOverdue (counted) if the remembered rows are too old or too many to append more."""
        with self._lock:
            count, waiting_for = len(self._rows), self.waiting_for
            age = self._clock() - next(iter(self._rows.values()))[1] if count else 0.0
            ids = (min(self._rows), max(self._rows)) if self._should_warn(age) else None
        if ids is not None:
            log.warning(
                "%d audit row(s) this service appended (ids %d to %d) have waited %.0f s for %s; if this replica"
                " dies now they are forgotten unanchored. Check that these ids are in vault.audit_log (logged once"
                " per stretch)",
                count,
                ids[0],
                ids[1],
                age,
                waiting_for.value,
            )
        if count >= self._limit:
            reason = f"{count} of this replica's audit rows are waiting for {waiting_for.value} (the bound)"
        elif self.max_age is not None and age > self.max_age and waiting_for is WaitingFor.EXPORT:
            reason = (
                f"the audit upkeep checked this replica's audit rows against the chain but has not anchored them in"
                f" an exported checkpoint for {age:.0f} s (the bound is {self.max_age:.0f} s)"
            )
        elif self.max_age is not None and age > self.max_age:
            reason = (
                f"the audit upkeep has not checked this replica's audit rows for {age:.0f} s"
                f" (the bound is {self.max_age:.0f} s)"
            )
        else:
            return
        self.on_refused(1)
        unreachable, unsigned = self.database_unreachable, self.signer_unavailable
        if unreachable:
            reason += " while the vault's database cannot be reached"
        elif unsigned:
            reason += " while Vault (OpenBao) cannot sign a checkpoint"
        raise AuditChecksOverdue(reason, unreachable, waiting_for, unsigned)

    def _should_warn(self, age: float) -> bool:
        """Whether to log the early warning now (under the lock): the first call of a stretch past `warn_age`."""
        if self.warn_age is None or age <= self.warn_age:
            self._warned = False
            return False
        if self._warned:
            return False
        self._warned = True
        return True

    def oldest_age(self) -> float:
        """Seconds the oldest remembered row has waited for its check and its checkpoint's export (0 when none)."""
        with self._lock:
            return self._clock() - next(iter(self._rows.values()))[1] if self._rows else 0.0

    def remember(self, rows: Iterable[tuple[int, Link]]) -> None:
        """Remember appended rows until a checkpoint round checks them."""
        with self._lock:
            now = self._clock()
            for row_id, link in rows:
                self._rows[row_id] = (link, now)

    def remembered(self) -> dict[int, Link]:
        """A copy of the remembered rows (still remembered until `forget`)."""
        with self._lock:
            return {row_id: link for row_id, (link, _) in self._rows.items()}

    def checking(self) -> None:
        """A round is about to check the rows: until it says otherwise they wait for their check.

        A round that fails at the check after an earlier one failed at the export must not leave
        the refusals saying the rows were checked (review 19, R19-8).
        """
        with self._lock:
            self.waiting_for = WaitingFor.CHECK

    def checked(self, ids: Container[int]) -> None:
        """A round checked these rows against the chain: if the oldest is among them, it waits for the export now."""
        with self._lock:
            if self._rows and next(iter(self._rows)) in ids:
                self.waiting_for = WaitingFor.EXPORT

    def forget(self, ids: Iterable[int]) -> None:
        """Forget rows a round has checked and exported; the rows left wait for their check."""
        with self._lock:
            for row_id in ids:
                self._rows.pop(row_id, None)
            self.waiting_for = WaitingFor.CHECK

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)
