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
A token in the set is never revealed nor handed out, whatever its row says (`marked_rows`, `marked_found`
mark its rows erased: Detokenize answers NOT_FOUND for a row without a value, DATA_LOSS for one holding a
value again, as 76bead3 does; Tokenize's found row is DATA_LOSS, never a token). A value erased and
tokenized again later is not found by fingerprint (the erasure cleared it) and gets a new token, not in
the set: no false alarm.

Cost: nothing while the set is empty (one truthiness test per call); otherwise one keyed BLAKE2b per
found/fetched token and loaded audit key (the state copied, ~0.4-0.6 us) and a set probe. Memory: one
16-byte `bytes` in a set, ~33 + 16 bytes object plus ~30 bytes of set slot: about 80-100 bytes per erased
token (a million erasures: ~100 MB).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from vault_service.domain.audit import CHAIN_HASH_BYTES, MAX_ITEMS_PER_CALL, REVEAL_HASH_BYTES, record_hash
from vault_service.service.ports import EraseRow, EraseRowsPage, FoundToken, StoredToken

log = logging.getLogger(__name__)

OVERLAP_IDS = 1000
"""Erase rows are read again from this many ids before the newest read: an erase row whose id was handed out
before a row already read but committed after it is still learned (the set only grows; a row read twice is
harmless)."""

RETRIED_ROWS = 64
"""Erase rows that did not hold, read again each round (one read each) until they do: the newest so many."""

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
    if record.hash_version != 2:
        return f"it claims hash version {record.hash_version}: every row naming tokens is version 2"
    if len(record.row_hash) != CHAIN_HASH_BYTES or record_hash(record) != record.row_hash:
        return "its row hash is not that of its fields (changed after the chain trigger wrote it)"
    if row.next_prev_hash is not None and row.next_prev_hash != record.row_hash:
        return "the row after it does not link to it (its hash or a row after it changed)"
    hashes = record.event.revealed
    if not 1 <= len(hashes) <= MAX_ITEMS_PER_CALL or any(len(h) != REVEAL_HASH_BYTES for h in hashes):
        return "it names no token, more than a call may, or hashes of another length than the vault writes"
    return None


_unverified_count = 0
_unverified_lock = threading.Lock()


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


class ErasedTokens:
    """The keyed audit hashes of the erased tokens this replica knows of (see the module docstring)."""

    def __init__(self) -> None:
        self._hashes: set[bytes] = set()
        self._newest = 0
        self._read_once = False
        self._seen: set[int] = set()
        """Ids of the erase rows learned in the window the next read covers again: learned (and anchored) once."""
        self._failing: set[int] = set()
        """Ids of erase rows that did not hold when read (reported once): read again each round, by id, until they
        hold (a genuine erase row the owner changed only while it was read is learned once put back) or no longer
        read as erase rows; at most RETRIED_ROWS, the newest."""
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    def add(self, hashes: Iterable[bytes]) -> None:
        """Remember hashes of erased tokens (this replica's own erasure, before it answers)."""
        with self._lock:
            self._hashes.update(hashes)

    def learn(self, rows: EraseRows) -> int:
        """Read the erase rows written since the last read (all of them the first time); how many hashes were new.

        Page by page (ERASE_ROWS_PAGE rows); only rows that hold as the chain does are learned (`erase_row_problem`).
        Rows learned for the first time near the log's head are handed to the audit upkeep's check.
        """
        with self._lock:
            after = max(0, self._newest - OVERLAP_IDS)
            first = not self._read_once
        start, new, newest = after, 0, 0
        anchored_from: int | None = None
        while True:
            page = rows.erase_rows(after, ERASE_ROWS_PAGE)
            newest = max(newest, page.newest_id)
            if anchored_from is None:  # at start, only rows near the head: older ones the checkpoints anchor
                anchored_from = max(0, page.newest_id - OVERLAP_IDS) if first else start
            new += self._take(rows, page.rows, anchored_from)
            if not page.more or not page.rows:
                break
            after = page.rows[-1].record_id
        with self._lock:
            self._newest = max(self._newest, newest)
            self._read_once = True
            floor = max(0, self._newest - OVERLAP_IDS)
            self._seen = {i for i in self._seen if i > floor}
            retry = sorted(i for i in self._failing if i <= floor)
        for row_id in retry:  # out of the window now: read again by id (within it, the pages read it)
            again = rows.erase_rows(row_id - 1, 1).rows
            if again and again[0].record_id == row_id:
                new += self._take(rows, again, row_id - 1)  # anchored: it did not hold before
            else:  # no longer an erase row (put back as it was, or removed: the chain check names that)
                with self._lock:
                    self._failing.discard(row_id)
        return new

    def _take(self, rows: EraseRows, page: Sequence[EraseRow], anchored_from: int) -> int:
        """Learn the rows of one page that hold; report those that do not; how many hashes were new."""
        problems: dict[int, str] = {}
        learned: list[EraseRow] = []
        with self._lock:
            fresh = [row for row in page if row.record_id not in self._seen]
            failing = set(self._failing)
        for row in fresh:
            problem = erase_row_problem(row)
            if problem is None:
                learned.append(row)
            elif row.record_id not in failing:
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
        with self._lock:
            before = len(self._hashes)
            for row in learned:
                if row.record is not None:
                    self._hashes.update(row.record.event.revealed)
            self._seen.update(row.record_id for row in learned)
            self._failing.difference_update(row.record_id for row in learned)
            self._failing.update(problems)
            if len(self._failing) > RETRIED_ROWS:
                self._failing = set(sorted(self._failing)[-RETRIED_ROWS:])
            return len(self._hashes) - before

    def erased(self, hashers: Sequence[Hasher], tokens: Iterable[str]) -> set[str]:
        """The tokens among `tokens` whose keyed hash (under any of `hashers`) is a known erased token's."""
        known = self._hashes
        if len(hashers) == 1:  # one audit key loaded, the usual case: no generator per token
            (hash_of,) = hashers
            return {token for token in tokens if hash_of(token) in known}
        return {token for token in tokens if any(hash_of(token) in known for hash_of in hashers)}

    def marked_rows(self, hashers: Sequence[Hasher], rows: dict[str, StoredToken]) -> dict[str, StoredToken]:
        """Detokenize's fetched rows with those of known erased tokens marked erased (never revealed)."""
        hit = self.erased(hashers, [token for token, row in rows.items() if not row.erased])
        if not hit:
            return rows
        marked = dict(rows)
        for token in hit:
            marked[token] = rows[token]._replace(erased=True)
        log.error(
            "a token erased before has a row that does not say so in vault.tokens: the erasure was undone in the"
            " database; treated as erased. Report it to the security team",
            extra={"method": "detokenize", "items": len(hit)},
        )
        return marked

    def marked_found(self, hashers: Sequence[Hasher], found: dict[bytes, FoundToken]) -> dict[bytes, FoundToken]:
        """Tokenize's found rows with those of known erased tokens marked erased (never handed out)."""
        hit = self.erased(hashers, [row[1] for row in found.values() if not row[4]])
        if not hit:
            return found
        return {fp: (row[0], row[1], row[2], row[3], True) if row[1] in hit else row for fp, row in found.items()}
