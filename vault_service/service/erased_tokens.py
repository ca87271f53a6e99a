"""The erased tokens this replica knows of, by their keyed audit hashes: held in memory, out of the owner's table.

Until attack 43 the vault learned that a token is erased only from its row in `vault.tokens` (`erased_at`,
`sealed`), which the database owner controls: he wrote the value back with `erased_at` cleared (A43-3),
added a second row for the token beside the erased one (A43-4), or had a trigger deferred to commit copy
each erased row back (A43-5), and the next Tokenize of the value handed the erased token out again.

So each replica keeps the keyed hashes (`revealing.reveal_hasher`, 16 bytes) of the tokens erased, fed from
- its own erasures (at once, `add`), and
- the erase rows of the audit chain (`learn`: all of them at start, then the rows near the log's head, each
  key-check round): rows the owner cannot delete unseen (the chain and its signed, exported checkpoints;
  `audit verify` names a missing row), and the rows another replica's erasure writes.

Only from erase rows that hold as the chain does (attack 44, A44-3: the owner relabelled a REVEAL row, which names
hash(T), as an erase row for one key-check round and put it back; every replica then refused the live token T as
DATA_LOSS until restarted, `audit verify` intact). Each row read is checked as the audit upkeep checks the rows it
anchors (`erase_row_problem`): hash version 2, its row hash recomputed from its fields (`record_hash`, what the
chain trigger wrote), the row after it linked to it, only 16-byte hashes and no more than a call may name. A row
that fails is not learned: logged (its id, never a hash), counted (`erase_rows_unverified`, metric
`tokenvault_erase_rows_unverified_total`, alert EraseRowUnverified), as if the row were missing; `audit verify`
names it while it stands (its hash breaks the chain). The owner who also rewrites the row's hash must rewrite every
row after it up to the head (the link), and a row learned in a key-check round (or within OVERLAP_IDS of the head
at start) is handed to the audit upkeep's check as this replica's own erase rows are (`remember_erase_rows`): put
back or removed before the next checkpoint, it is named in the exported checkpoint (and the pending-rows note),
and `audit verify --exported` reports it. Left: a row further back read at start-up is checked by its hash and
link only (anchoring it would make the first upkeep round hash the log from the oldest erase row).
The rows are selected by `action = 'erase'` alone, not by their outcome nor by naming tokens (attack 46, A46-1: the
read said `outcome LIKE 'ok:%'` and `cardinality(revealed) > 0`, so the owner who prefixed an old erase row's
outcome while a replica started - and put it back after that replica's first key-check round, whose reads then start
near the anchored head - hid the erasure from it for good: never read, reported nor retried). Now such a row reads,
fails its hash check, is reported and read again in turn until it holds (none dropped from the retries: RETRIED_ROWS
per round); a row naming no token that holds teaches nothing. Such a row is learned only as the row it was
when it failed (attack 50, A50-3: read again by id it was counted against nothing, so the owner showed it forged for
that read - a live token's hash, its row hash recomputed, the next row relinked - and it was learned, never the
erasure): its stored row hash is kept, replaced by the one a read counted into a matching signed commitment
(`vouch`), and a read showing another (or, once signed, no erase row at all) is reported, not learned, and the
replica unhealthy while it stands (`changed`). Left: a row failing above the newest signed head is held to its first
read's stored hash until a matching tally covers it. A row whose `action` the owner
changes for the length of the start-up read is not selected, and a reveal row relabelled with a recomputed hash and
the next row relinked (A46-3) holds at start: the signed checkpoints' commitment to the erase rows settles both for
the rows a checkpoint covers (the start-up read is counted against it: service/erase_commitment_check.py); in the
unanchored tail they still stand. A token the set refuses is logged with the erase record it was
learned from, so the security team can check that record (A46-3's false alarm named none).
Where each round's read starts (attack 45, A45-1: it started OVERLAP_IDS below the highest id the last read saw,
`max(id)` of the log, so one row the owner put at id 10^15 for the length of one round moved every later read past
every genuine erase row: the replica never learned another's erasure until restarted). The read ends at the log's
newest row within the audit id sequence (as the upkeep's head); a row beyond it is reported (logged by id, counted:
`erase_read_window_tampered`, metric `tokenvault_erase_read_window_tampered_total`, alert EraseReadWindowTampered).
The next read starts OVERLAP_IDS below that newest row, never above the head of the last checkpoint this process's
audit upkeep exported (`anchored`; 0 before the first): a far row within a sequence the owner moved too changes no
start unless a checkpoint anchored it, and `audit verify --exported` names an anchored row once removed. A log whose
newest id falls below one an earlier read saw (such a row removed, the sequence set back) is reported and read
again from its start at once. And the set's `version` moves with every hash it gains: Tokenize clears the token
cache before a lookup whenever it moved since the last clear (A45-2: a cache hit consults neither the row nor the
set, and the cache was cleared only when a round learned a row or saw `vault.erasure_count`, the owner's, move).

A token in the set is never revealed nor handed out, whatever its row says (`marked_rows`, `marked_found`
mark its rows erased: Detokenize answers NOT_FOUND for a row without a value, DATA_LOSS for one holding a
value again, as 76bead3 does; Tokenize's found row is DATA_LOSS, never a token). A value erased and
tokenized again later is not found by fingerprint (the erasure cleared it) and gets a new token, not in
the set: no false alarm.

Cost: nothing while the set is empty (one truthiness test per call); otherwise one keyed BLAKE2b per
found/fetched token and loaded audit key (the state copied, ~0.4-0.6 us) and a dict probe. Memory: one
16-byte `bytes` key (49 bytes) and its first erase record's id in a dict: ~135 bytes per erased token (measured with
100k: ~84 bytes of dict slot and id, a set's slot was ~42), a million erasures ~135 MB (was ~90 MB); plus, per erase
row learned from (attack 51, A51-1/A51-2: the stored row hash each record showed when learned, so a matched rebuild
keeps a failing signed row's hashes only if they were learned under its signed stored hash), its id and 32-byte
stored hash in a dict, ~115 bytes (measured with 100k rows of one token each: ~250 bytes per erased token in all, a
million ~250 MB; rows of 50 tokens: ~2 bytes more per token); and, only for a hash learned from more than one erase
row or from a row showing another stored hash (relabelled or forged rows: rare), a set of (record, stored hash)
pairs, ~450 bytes per such hash (measured: ~600 with its second record's entry).
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from vault_service.domain.audit import CHAIN_HASH_BYTES, MAX_ITEMS_PER_CALL, REVEAL_HASH_BYTES, record_hash
from vault_service.domain.erase_commitment import EraseTally
from vault_service.domain.erase_rebuild import OWN, LearnedHashes, rebuilt_set
from vault_service.service.ports import EraseRow, EraseRowsPage, FoundToken, StoredToken

log = logging.getLogger(__name__)

OVERLAP_IDS = 1000
"""Erase rows are read again from this many ids before the newest read: an erase row whose id was handed out
before a row already read but committed after it is still learned (the set only grows; a row read twice is
harmless)."""

RETRIED_ROWS = 64
"""Erase rows that did not hold read again per round (one read each) until they do, in turn: none is ever dropped
(attack 46: with the newest 64 kept, the owner who broke 65 erase rows while a replica started and put them back
made it forget the oldest for good). Each such row is reported when read; they are read again within
ceil(rows / RETRIED_ROWS) rounds."""

ERASE_ROWS_PAGE = 2048
"""Erase rows per read, at most (the read also ends at ERASE_ROWS_PAGE_BYTES of fields: bounded, whatever the owner
wrote): ~50-150 bytes of fields a genuine erase row of one token, so a start reads its erase rows 2048 at a time."""

Hasher = Callable[[str], bytes]


class EraseRows(Protocol):
    """Where the erase rows of the audit chain are read (the token store)."""

    def erase_rows(self, after_id: int, limit: int) -> EraseRowsPage:
        """The first `limit` served erase rows after `after_id` (id order), the log's newest id, whether more follow."""
        ...

    def remember_erase_rows(self, rows: Sequence[tuple[int, tuple[bytes, bytes]]]) -> None:
        """Have the audit upkeep check that the chain it anchors holds these rows with these links."""
        ...


def erase_row_problem(row: EraseRow) -> str | None:
    """Why an erase row read by the set does not hold as the chain does (None: it holds; see the module's doc)."""
    record = row.record
    if record is None:
        return "it is larger than any audit row the vault writes (its fields were not read)"
    if record.hash_version != 2 and record.event.revealed:
        return f"it claims hash version {record.hash_version}: every row naming tokens is version 2"
    if len(record.row_hash) != CHAIN_HASH_BYTES or record_hash(record) != record.row_hash:
        return "its row hash is not that of its fields (changed after the chain trigger wrote it)"
    if row.next_prev_hash is not None and row.next_prev_hash != record.row_hash:
        return "the row after it does not link to it (its hash or a row after it changed)"
    hashes = record.event.revealed
    if not hashes:  # a refusal, an erasure of none: nothing to learn, once it holds (its `revealed` may be cleared)
        return None
    if not 1 <= len(hashes) <= MAX_ITEMS_PER_CALL or any(len(h) != REVEAL_HASH_BYTES for h in hashes):
        return "it names no token, more than a call may, or hashes of another length than the vault writes"
    return None


_unverified_count = 0
_unverified_lock = threading.Lock()
_window_count = 0
_full_read: tuple[float, int] = (0.0, 0)


def full_read() -> tuple[float, int]:
    """The last read of the erase rows from the log's start by this process: (seconds, erase rows read); (0, 0) none.

    The start-up read (and a read again from the start after the log's head went back). The replica serves nothing
    before it ends: its time grows with every erase row in the log, a refused Erase call's row too (review 40,
    R40-3), so it is exported (`tokenvault_erase_rows_start_read_seconds` / `_rows`) and logged, for the start-up
    probe's budget (docs/production.md, *Start-up time*).
    """
    return _full_read


def erase_rows_unverified() -> int:
    """How many erase rows this process did not learn from because they do not hold as the chain does (A44-3)."""
    return _unverified_count


def _report_unverified(problems: dict[int, str]) -> None:
    global _unverified_count
    with _unverified_lock:
        _unverified_count += len(problems)
    for row_id, problem in sorted(problems.items()):
        log.error(
            "audit record %d reads as an erase row but does not hold in the audit chain: %s. Its tokens are not"
            " taken for erased (as if the row were missing); the database owner may have relabelled or planted it"
            " (attack 44, A44-3). Report it to the security team and run audit verify",
            row_id,
            problem,
            extra={"record_id": row_id},
        )


def _report_changed(row_id: int, how: str) -> None:
    """Log and count a failing erase row read again not as the row it was when it failed (attack 50, A50-3)."""
    global _unverified_count
    with _unverified_lock:
        _unverified_count += 1
    log.error(
        "audit record %d, an erase row that did not hold when read before, is read again but %s: not the row read"
        " then (nor, once counted, the row the signed checkpoints commit to). It is not learned and is read again"
        " until it is; this replica reports its database unhealthy meanwhile (the database owner may have forged it"
        " for this read: attack 50, A50-3). Report it to the security team and run audit verify",
        row_id,
        how,
        extra={"record_id": row_id},
    )


def erase_read_window_tampered() -> int:
    """How many times this process's erase-row read met a log head it cannot vouch for (attack 45, A45-1).

    A row beyond the audit id sequence, or a log whose newest id went below one an earlier read saw.
    """
    return _window_count


def _report_window(message: str | None, *args: object) -> None:
    """Count one read that met a head it cannot vouch for; log `message` (None: already logged for this head)."""
    global _window_count
    with _unverified_lock:
        _window_count += 1
    if message is not None:
        log.error(message, *args)


def _told_full_read(seconds: float, rows: int, known: int) -> None:
    """Keep and log the time and size of a read of the erase rows from the log's start (`full_read`)."""
    global _full_read
    with _unverified_lock:
        _full_read = (seconds, rows)
    log.info(
        "read the audit log's %d erase row(s) from its start in %.2f s (%d erased token(s) known)",
        rows,
        seconds,
        known,
        extra={"erase_rows": rows, "seconds": round(seconds, 3)},
    )


class ErasedTokens:
    """The keyed audit hashes of the erased tokens this replica knows of (see the module docstring)."""

    def __init__(self) -> None:
        self._learned = LearnedHashes()
        """Each erased token's keyed hash, and every erase record it was learned from with the stored row hash that
        record showed then (0: this replica's own erasure): a matched rebuild keeps a hash on the strength of a failing
        signed row only if it was learned under that row's signed stored hash (attack 51, A51-1/A51-2)."""
        self._newest = 0
        """The log's newest id (within the id sequence) the last read saw: the log never goes below it."""
        self._start = 0
        """The next read starts OVERLAP_IDS before it: the last read's newest id, never past the anchored head."""
        self._anchored: int | None = None
        """The head of the last checkpoint this process's audit upkeep exported (None: none yet)."""
        self._beyond_told = 0
        self._read_once = False
        self.version = 0
        """Moves whenever the set gains a hash: a token cache filled before must not answer (`TokenCache.erased`)."""
        self._seen: set[int] = set()
        """Ids of the erase rows learned in the window the next read covers again: learned (and anchored) once."""
        self._failing: dict[int, bytes | None] = {}
        """Erase rows that did not hold when read (reported once), and the stored row hash each must show to be
        learned: read again each round, by id, until they hold with it (a genuine erase row the owner changed only
        while it was read is learned once put back) or no longer read as erase rows; RETRIED_ROWS of them per round,
        in turn (none dropped: ~150 bytes each). The hash is the one the read that first failed saw (None: its
        fields were not read), replaced by the one a read counted into a matching signed commitment (`vouch`):
        attack 50, A50-3 - a row read again by id is counted against nothing, so the owner showed it forged for
        that one read (a live token's hash, its row hash recomputed, the next row relinked) and it was learned."""
        self._vouched: set[int] = set()
        """Ids in `_failing` whose hash a read counted into a matching signed commitment: a signed erase row, never
        dropped from the retries (one that no longer reads as an erase row stays failing, named in `changed`)."""
        self._changed: set[int] = set()
        """Ids in `_failing` whose last read showed another stored row hash than the one kept (or, signed, no erase
        row at all): the replica reports its database unhealthy while any stands (`changed`)."""
        self._retried_to = 0
        """The id the last round's retries ended at: the next round's go on after it (wrapping around)."""
        self._rebuild = False
        """The next read re-reads every erase row from the log's start for a rebuild of the set (`rebuild`)."""
        self._rebuilt: LearnedHashes | None = None
        """While a rebuilding read runs: each hash it learned, and the erase records it was learned from (not yet in
        the set: `rebuild` decides what of it is taken)."""
        self._rebuilt_failing: dict[int, bytes | None] = {}
        """While a rebuilding read runs: the erase rows it selected that do not hold, and their stored row hashes."""
        self._lock = threading.Lock()

    @property
    def _hashes(self) -> dict[bytes, int]:
        """Each erased token's keyed hash and the first erase record it was learned from (0: this replica's own)."""
        return self._learned.first

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    def add(self, hashes: Iterable[bytes]) -> None:
        """Remember hashes of erased tokens (this replica's own erasure, before it answers)."""
        with self._lock:
            before = len(self._hashes)
            for token_hash in hashes:
                self._learned.learn(token_hash, OWN, b"")
            if len(self._hashes) != before:
                self.version += 1

    def anchored(self, head_id: int) -> None:
        """The audit upkeep exported a checkpoint of the chain up to `head_id`: reads may start that far (A45-1).

        The erase rows' read starts near the log's newest id, never beyond the newest this process anchored: a row
        the owner put at a far id for the length of one read (and took away) moves no later read past the genuine
        rows; one he had anchored first is named by `audit verify --exported` once removed.
        """
        with self._lock:
            self._anchored = head_id

    def rebuild(
        self,
        rows: EraseRows,
        tally: EraseTally | None,
        check: Callable[[EraseTally], str | None],
        verified: int | None = None,
    ) -> str | None:
        """Re-read every erase row and rebuild the set as far as a signed commitment vouches for the read.

        Review 47, R47-1; attack 49, A49-1/A49-1b. Returns why the read is not what the newest signed checkpoint
        commits to (None: it is, or none commits). Called while the erase rows do not match a signed checkpoint's
        commitment: the rows read meanwhile may have been the owner's choice. `tally` counts the read from the log's
        start up to the head of the newest signed checkpoint this replica verifies (None: none commits to the erase
        rows); `check(tally)` says why the rows it counted are not those that checkpoint commits to. What the set
        keeps and gains: domain/erase_rebuild.py (a read that does not match drops nothing and teaches nothing up to
        that head - A49-1: the owner hid an old, committed erase row for the length of the rebuilding read and the
        replica forgot the erasure for its life). `verified`: the head whose commitment this replica verified last; an
        unmatched read still learns the rows above it (review 49, R49-2).
        """
        with self._lock:
            self._start = self._newest = 0
            self._read_once = False
            self._rebuild = True
            self._seen = set()
        try:
            self.learn(rows, tally)
            problem = None if tally is None else check(tally)
        finally:
            with self._lock:
                read, self._rebuilt = self._rebuilt, None
                failing, self._rebuilt_failing = self._rebuilt_failing, {}
                self._rebuild = False
        upto = 0 if tally is None else tally.upto or 0
        self._settle_rebuild(read or LearnedHashes(), failing, upto, problem is None, verified)
        if problem is None and upto:  # the read counted its failing rows' stored hashes into the matching tally
            self.vouch({i: h for i, h in failing.items() if i <= upto and h is not None})
        return problem

    def vouch(self, rows: dict[int, bytes]) -> None:
        """Failing erase rows (id: stored row hash) as a read counted into a matching signed commitment (A50-3).

        Such a row is learned only from a read showing that stored hash (and holding): the signed erase row itself.
        """
        with self._lock:
            for row_id, row_hash in rows.items():
                if row_id in self._failing:
                    self._failing[row_id] = row_hash
                    self._vouched.add(row_id)

    def knows(self, hashes: Iterable[bytes]) -> bool:
        """Whether every one of `hashes` is a known erased token's (a row naming none: True)."""
        known = self._hashes
        return all(token_hash in known for token_hash in hashes)

    def learn_signed(self, rows: Sequence[EraseRow]) -> int:
        """Learn the erase rows a read counted into a matching signed commitment that hold; how many hashes were new.

        Attack 51, A51-3: a round's check of the rows between the head verified last and a newer signed checkpoint
        (service/erase_commitment_check.py, `problem`) that matches read exactly the signed erase rows; one of them
        this replica never learned was hidden from its earlier reads (an old erase row relabelled while a replica
        whose start-up read no commitment checked started, put back once its learn window had moved past). Learned
        as a matched rebuild learns (under its id), a row that does not hold stays as the reads left it (failing).
        """
        holding = [row for row in rows if row.record is not None and erase_row_problem(row) is None]
        with self._lock:
            before = len(self._hashes)
            for row in holding:
                assert row.record is not None
                for token_hash in row.record.event.revealed:
                    self._learned.learn(token_hash, row.record_id, row.record.row_hash)
                self._failing.pop(row.record_id, None)
                self._vouched.discard(row.record_id)
                self._changed.discard(row.record_id)
            new = len(self._hashes) - before
            if new:
                self.version += 1
        if new:
            log.warning(
                "learned %d erased token(s) from erase record(s) %s that a read matching a signed checkpoint's"
                " commitment selected but this replica's reads of the erase rows had not learned: written after the"
                " round's read, or hidden from the earlier reads (attack 51, A51-3); run audit verify",
                new,
                ", ".join(str(row.record_id) for row in holding[:20]),
            )
        return new

    def vouch_read(self, upto: int) -> None:
        """The failing rows up to `upto` as the read just made saw them: its tally matched the signed commitment."""
        with self._lock:
            rows = {i: h for i, h in self._failing.items() if i <= upto and h is not None}
        self.vouch(rows)

    def failing_ids(self) -> set[int]:
        """The ids of the erase rows that did not hold when read and are read again until they do."""
        with self._lock:
            return set(self._failing)

    def changed(self) -> list[int]:
        """Failing erase rows whose last read showed another stored hash than the kept one (A50-3); sorted ids."""
        with self._lock:
            return sorted(self._changed)

    def learn(self, rows: EraseRows, tally: EraseTally | None = None) -> int:
        """Read the erase rows written since the last read (all of them the first time); how many hashes were new.

        Page by page (ERASE_ROWS_PAGE rows); only rows that hold as the chain does are learned (`erase_row_problem`).
        Rows learned for the first time near the log's head are handed to the audit upkeep's check. `tally` counts
        every erase row read, held or not, by its id and stored row hash (the start-up read's check against the
        signed commitment, service/erase_commitment_check.py: A46-3).
        """
        with self._lock:
            after = max(0, self._start - OVERLAP_IDS)
            first = not self._read_once
            previous = self._newest
            self._rebuilt = LearnedHashes() if first and self._rebuild else None
            self._rebuilt_failing = {}
        start, new, newest, beyond, read = after, 0, 0, 0, 0
        anchored_from: int | None = None
        began = time.monotonic()
        while True:
            page = rows.erase_rows(after, ERASE_ROWS_PAGE)
            read += len(page.rows)
            if tally is not None:
                for row in page.rows:
                    tally.add(row.record_id, b"" if row.record is None else row.record.row_hash)
            newest = max(newest, page.newest_id)
            beyond = max(beyond, page.beyond_id)
            if anchored_from is None:  # at start, only rows near the head: older ones the checkpoints anchor
                anchored_from = max(0, page.newest_id - OVERLAP_IDS) if first else start
            new += self._take(rows, page.rows, anchored_from)
            if not page.more or not page.rows:
                break
            after = page.rows[-1].record_id
        if first:
            _told_full_read(time.monotonic() - began, read, len(self))
        if beyond:  # counted every read while it stands (the alert stays up), logged once per row
            told, self._beyond_told = self._beyond_told, beyond
            _report_window(
                None
                if beyond == told
                else "the audit log holds row %d, beyond the audit id sequence (its newest row within it is %d):"
                " written behind the chain trigger's back. The erased-token read ends within the sequence and does not"
                " move its window there (attack 45, A45-1); report it to the security team and run audit verify",
                beyond,
                newest,
            )
        if newest < previous and not first:  # the log never shrinks: rows read before were removed, or planted
            _report_window(
                "the audit log's newest row is %d, below row %d an earlier read of the erase rows saw: a row was"
                " removed from the log or planted for the length of a read (attack 45, A45-1). The erase rows are"
                " read again from the log's start; report it to the security team and run audit verify",
                newest,
                previous,
            )
            with self._lock:
                self._start = self._newest = 0
                self._read_once = False
            return new + self.learn(rows)
        with self._lock:
            self._newest = newest
            # Never past the head this process anchored in an exported checkpoint (0 before the first): what the
            # owner puts beyond it and takes away again before it is anchored moves no read's start (A45-1).
            self._start = min(newest, self._anchored or 0)
            self._read_once = True
            floor = max(0, self._start - OVERLAP_IDS)
            self._seen = {i for i in self._seen if i > floor}
            due = sorted(i for i in self._failing if i <= floor)
            turn = bisect.bisect_right(due, self._retried_to)
            retry = (due[turn:] + due[:turn])[:RETRIED_ROWS]
            self._retried_to = retry[-1] if retry else 0
        for row_id in retry:  # out of the window now: read again by id (within it, the pages read it)
            again = rows.erase_rows(row_id - 1, 1).rows
            if again and again[0].record_id == row_id:
                new += self._take(rows, again, row_id - 1)  # anchored: it did not hold before
            else:  # no longer an erase row (put back as it was, or removed: the chain check names that)
                self._gone(row_id)
        return new

    def _gone(self, row_id: int) -> None:
        """A failing row read again by id is no erase row now: dropped, unless a signed tally counted it (A50-3)."""
        with self._lock:
            if row_id not in self._vouched:
                self._failing.pop(row_id, None)
                self._changed.discard(row_id)
                return
            new = row_id not in self._changed
            self._changed.add(row_id)
        if new:
            _report_changed(row_id, "it no longer reads as an erase row")

    def _settle_rebuild(
        self,
        read: LearnedHashes,
        failing: dict[int, bytes | None],
        upto: int,
        matches: bool,
        verified: int | None,
    ) -> None:
        """Take what a rebuilding read may change into the set (domain/erase_rebuild.py); log the hashes dropped."""
        with self._lock:
            before = self._learned.first
            kept = rebuilt_set(self._learned, read, failing, upto, matches, verified)
            gone = {token_hash: record for token_hash, record in before.items() if token_hash not in kept.first}
            dropped = sorted(set(gone.values()))
            self._learned = kept
            if kept.first != before:
                self.version += 1
        if dropped:
            log.warning(
                "%d erased token(s) learned from erase record(s) %s are no longer erased: those rows are not erase rows"
                " when all erase rows were read again after a mismatch with the signed checkpoints, a read that matches"
                " the newest signed commitment (review 47, R47-1); run audit verify",
                len(gone),
                ", ".join(str(record) for record in dropped[:20]),
            )

    def _take(self, rows: EraseRows, page: Sequence[EraseRow], anchored_from: int) -> int:
        """Learn the rows of one page that hold; report those that do not; how many hashes were new."""
        problems: dict[int, str] = {}
        learned: list[EraseRow] = []
        not_holding: list[int] = []
        with self._lock:
            fresh = [row for row in page if row.record_id not in self._seen]
            failing = dict(self._failing)
        changed: dict[int, bool] = {}
        for row in fresh:
            problem = erase_row_problem(row)
            stored = None if row.record is None else row.record.row_hash
            kept = failing.get(row.record_id)
            if row.record_id in failing:  # learned only as the row it was when it failed (A50-3); None: unknown
                changed[row.record_id] = kept is not None and stored != kept
                if changed[row.record_id]:
                    problem = "its stored row hash is not the one it had when it failed before"
            if problem is None:
                learned.append(row)
                continue
            not_holding.append(row.record_id)
            if row.record_id not in failing:
                problems[row.record_id] = problem
        if problems:
            _report_unverified(problems)
        anchored = [
            (row.record_id, (row.record.prev_hash, row.record.row_hash))
            for row in learned
            if row.record is not None and row.record_id > anchored_from
        ]
        if anchored:
            rows.remember_erase_rows(anchored)
        told: list[int] = []
        with self._lock:
            for row_id, now in changed.items():
                if row_id not in self._failing:
                    continue
                if now and row_id not in self._changed:
                    told.append(row_id)
                if now:
                    self._changed.add(row_id)
                else:
                    self._changed.discard(row_id)
            for row in fresh:  # a row first read with its fields unread: the hash of its first read that has them
                if row.record_id in not_holding and row.record is not None and failing.get(row.record_id, b"") is None:
                    self._failing[row.record_id] = row.record.row_hash
        for row_id in told:
            _report_changed(row_id, "its stored row hash is not the one it had when it failed before")
        with self._lock:
            before = len(self._hashes)
            # A rebuilding read's hashes wait for the check of that read against the signed commitment (A49-1).
            into = self._learned if self._rebuilt is None else self._rebuilt
            if self._rebuilt is not None:
                self._rebuilt_failing.update(
                    (row.record_id, None if row.record is None else row.record.row_hash)
                    for row in fresh
                    if row.record_id in not_holding
                )
            for row in learned:
                if row.record is not None:
                    for token_hash in row.record.event.revealed:
                        into.learn(token_hash, row.record_id, row.record.row_hash)
            if len(self._hashes) != before:
                self.version += 1
            self._seen.update(row.record_id for row in learned)
            for row in learned:
                self._failing.pop(row.record_id, None)
                self._vouched.discard(row.record_id)
                self._changed.discard(row.record_id)
            for row in fresh:
                if row.record_id in problems:
                    self._failing[row.record_id] = None if row.record is None else row.record.row_hash
            return len(self._hashes) - before

    def erased(self, hashers: Sequence[Hasher], tokens: Iterable[str]) -> set[str]:
        """The tokens among `tokens` whose keyed hash (under any of `hashers`) is a known erased token's."""
        known = self._hashes
        if len(hashers) == 1:  # one audit key loaded, the usual case: no generator per token
            (hash_of,) = hashers
            return {token for token in tokens if hash_of(token) in known}
        return {token for token in tokens if any(hash_of(token) in known for hash_of in hashers)}

    def records_of(self, hashers: Sequence[Hasher], tokens: Iterable[str]) -> list[int]:
        """The erase records the set learned `tokens` from, sorted (0: this replica's own erasure); for the log."""
        known = self._hashes
        found = {known[h] for token in tokens for hash_of in hashers if (h := hash_of(token)) in known}
        return sorted(found)

    def _report_marked(self, method: str, hashers: Sequence[Hasher], hit: Iterable[str]) -> None:
        """Log the tokens the set marked erased although their rows do not say so, naming the erase records.

        The record ids let the security team check those rows with `audit verify` (attack 46, A46-3: an old reveal row
        relabelled as a well-hashed erase row for the length of a replica's start-up read made that replica refuse a
        live token; the line named no record, so the false alarm could not be told from an undone erasure).
        """
        tokens = list(hit)
        records = self.records_of(hashers, tokens)
        named = ", ".join("this replica's own erasure" if r == 0 else str(r) for r in records[:20])
        log.error(
            "a token erased before (erase record(s) %s) has a row that does not say so in vault.tokens: the erasure"
            " was undone in the database; treated as erased. Report it to the security team and run audit verify:"
            " a record that does not hold there as an erase row was planted for this replica's read",
            named,
            extra={"method": method, "items": len(tokens), "erase_records": records[:20]},
        )

    def marked_rows(self, hashers: Sequence[Hasher], rows: dict[str, StoredToken]) -> dict[str, StoredToken]:
        """Detokenize's fetched rows with those of known erased tokens marked erased (never revealed)."""
        hit = self.erased(hashers, [token for token, row in rows.items() if not row.erased])
        if not hit:
            return rows
        marked = dict(rows)
        for token in hit:
            marked[token] = rows[token]._replace(erased=True)
        self._report_marked("detokenize", hashers, hit)
        return marked

    def marked_found(self, hashers: Sequence[Hasher], found: dict[bytes, FoundToken]) -> dict[bytes, FoundToken]:
        """Tokenize's found rows with those of known erased tokens marked erased (never handed out)."""
        hit = self.erased(hashers, [row[1] for row in found.values() if not row[4]])
        if not hit:
            return found
        self._report_marked("tokenize", hashers, hit)
        return {fp: (row[0], row[1], row[2], row[3], True) if row[1] in hit else row for fp, row in found.items()}
