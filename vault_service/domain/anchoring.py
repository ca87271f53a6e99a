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

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence

from vault_service.domain.audit import AuditEvent, AuditRecord, chain_hash_v2, record_hash
from vault_service.domain.checkpoints import ChainHead
from vault_service.domain.errors import AuditUnavailable

log = logging.getLogger(__name__)

Link = tuple[bytes, bytes]
"""A row's (prev_hash, row_hash)."""
ChainLink = tuple[int, bytes, bytes]
"""A row of the chain as the segment read gives it: (id, prev_hash, row_hash)."""

DEFAULT_REMEMBERED_ROWS = 200_000
"""Rows remembered until a checkpoint round checks them (~25 MB at most; a round drains them every few seconds);
at the bound appends are refused."""


HASHED_PER_PAUSE = 64
"""Rows of other replicas hashed between two pauses of a round (~1 ms of the interpreter at ~16 µs a row)."""


def stored_as_written(record: AuditRecord, event: AuditEvent) -> bool:
    """Whether `record` (the row an append returned) is `event` as written, chained by the database (hash v2)."""
    return record.hash_version == 2 and record.row_hash == chain_hash_v2(
        record.prev_hash, record.record_id, record.at, event
    )


class AuditChecksOverdue(AuditUnavailable):
    """The audit rows this process appended have gone unchecked too long, or too many of them: appends are refused.

    A round that never succeeds leaves the rows it should check in memory, unanchored (review
    16, finding 1: the database owner can make one replica's segment read fail); the vault fails
    closed rather than serve calls whose rows nothing checks.
    """


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

    def check_open(self) -> None:
        """Raise AuditChecksOverdue (counted) if the remembered rows are too old or too many to append more."""
        with self._lock:
            count = len(self._rows)
            age = self._clock() - next(iter(self._rows.values()))[1] if count else 0.0
            ids = (min(self._rows), max(self._rows)) if self._should_warn(age) else None
        if ids is not None:
            log.warning(
                "%d audit row(s) this service appended (ids %d to %d) have waited %.0f s for the audit upkeep's"
                " check; if this replica dies now they are forgotten unchecked. Check that these ids are in"
                " vault.audit_log (logged once per stretch)",
                count,
                ids[0],
                ids[1],
                age,
            )
        if count >= self._limit:
            reason = f"{count} of this replica's audit rows are waiting for the audit upkeep's check (the bound)"
        elif self.max_age is not None and age > self.max_age:
            reason = (
                f"the audit upkeep has not checked this replica's audit rows for {age:.0f} s"
                f" (the bound is {self.max_age:.0f} s)"
            )
        else:
            return
        self.on_refused(1)
        raise AuditChecksOverdue(
            f"{reason}, so the call was refused until the upkeep checks them. If the database or Vault is"
            " away, this clears by itself once the upkeep can read the database again; if it persists, tell"
            " the security team (alert AuditUpkeepFailing: the vault's log says why its audit upkeep rounds fail)"
        )

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
        """Seconds the oldest remembered row has waited for its check (0 when none)."""
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

    def forget(self, ids: Iterable[int]) -> None:
        """Forget rows a round has checked."""
        with self._lock:
            for row_id in ids:
                self._rows.pop(row_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)


def rows_to_hash(links: Sequence[ChainLink], appended: Mapping[int, Link]) -> list[int]:
    """The ids of the segment's rows whose hash must be recomputed from their fields: all but the appended.

    An appended row shown with the link and hash the append returned needs none: the append
    checked that hash against the event written, chained after that very link.
    """
    return [i for i, prev, row in links if appended.get(i) != (prev, row)]


def missing_rows(
    links: Sequence[ChainLink],
    head: ChainHead | None,
    appended: Mapping[int, Link],
    others: Mapping[int, AuditRecord],
    pause: Callable[[], None] | None = None,
) -> tuple[int, ...]:
    """The ids of `appended` rows the chain segment ending at `head` does not hold with their link and hash.

    `appended` was taken before `head` was read: each of those rows was committed by then and
    numbered by the id sequence, so a head read afterwards is at or beyond it; one beyond the
    head is missing. `links` is the log read from the lowest appended id up to `head`, in id
    order, and `others` the full rows `rows_to_hash` named. The segment vouches for a row only
    if it holds together: each row links to the row before, its hash is that of its fields (an
    appended row's was checked at the append), and the last row is `head` itself. Otherwise it
    vouches for none of them.

    `pause` is called after every `HASHED_PER_PAUSE` rows hashed here: the upkeep yields the
    interpreter there, so the calls being served do not wait behind one long burst of hashing.
    """
    if not appended:
        return ()
    if head is None:
        return tuple(sorted(appended))
    holds = bool(links) and links[-1][0] == head.head_id and links[-1][2] == head.head_hash
    previous: bytes | None = None
    count = 0
    for row_id, prev, row in links:
        if not holds:
            break
        record = others.get(row_id)
        own = appended.get(row_id) == (prev, row)
        hashed = own or (
            record is not None and (record.prev_hash, record.row_hash) == (prev, row) and record_hash(record) == row
        )
        if not own and pause is not None:
            count += 1
            if count % HASHED_PER_PAUSE == 0:
                pause()
        holds = hashed and (previous is None or prev == previous)
        previous = row
    if not holds:
        return tuple(sorted(appended))
    in_chain = {i: (prev, row) for i, prev, row in links}
    return tuple(sorted(i for i, link in appended.items() if in_chain.get(i) != link))
