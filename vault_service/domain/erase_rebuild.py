"""Which erased tokens a replica keeps after re-reading every erase row (review 47, R47-1; attack 49, A49-1/A49-1b).

After a mismatch with a signed checkpoint's erase-row commitment a running replica re-reads every erase row from the
log's start and rebuilds its erased-token set from that read: an erase row hidden while its learn window passed it is
learned, a hash learned from a reveal row relabelled `erase` (and put back) is dropped. The read is the database
owner's to shape as well, so it is counted into the running digest up to the head of the newest signed checkpoint the
replica verifies, and what it may change depends on that count:
- it matches the commitment: the rows up to that head are exactly the signed erase rows (id and stored row hash), so
  a hash is kept only if the read learned it, or one of the erase rows it was learned from is above that head, or
  was selected but does not hold now (its fields changed, its stored hash kept: a signed erase row) AND the hash was
  learned from that row while it showed that same signed stored hash (attack 51, A51-1: a hash learned from a forged
  version of a signed erase row - another stored hash - is dropped although the row is failing now). Every erase
  record a hash was learned from counts, not only the first (A51-2: a token's old reveal row relabelled `erase` for
  one round was its first record; the genuine erase row naming it, failing in the rebuild, keeps it);
- it does not (A49-1: an old committed erase row relabelled for the length of that read; A49-1b: an old reveal row
  relabelled `erase`): nothing is dropped, and nothing is learned from rows at or below the head the replica verified
  last (rows above it are learned, as every round's read learns them: R49-2);
- rows above the head no signed commitment covers: learned from as every round's read learns them, never a reason
  to drop a hash (a hash learned from such a row is kept).
This replica's own erasures (record 0) are always kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

OWN = 0
"""The record of this replica's own erasures (no erase row read: always kept)."""


class LearnedHashes:
    """Erased-token hashes, each with every (erase record, stored row hash) it was learned from.

    Kept small: `first` maps each hash to the first record it was learned from (0: this replica's own erasure);
    `under` maps each erase record learned from to the stored row hash it showed when first learned from (~100 bytes
    per erase row); `more` lists every (record, stored hash) of a hash only when its learns are not just its first
    record under that record's `under` hash (learned from a second row, or from a row showing another stored hash:
    rare). A hash learned from this replica's own erasure needs no more (always kept).
    """

    def __init__(self) -> None:
        self.first: dict[bytes, int] = {}
        self.under: dict[int, bytes] = {}
        self.more: dict[bytes, set[tuple[int, bytes]]] = {}

    def copy(self) -> LearnedHashes:
        """An independent copy."""
        copied = LearnedHashes()
        copied.first = dict(self.first)
        copied.under = dict(self.under)
        copied.more = {token_hash: set(learns) for token_hash, learns in self.more.items()}
        return copied

    def learns(self, token_hash: bytes) -> set[tuple[int, bytes]]:
        """Every (erase record, stored row hash) `token_hash` was learned from ((0, b""): this replica's erasure)."""
        first = self.first[token_hash]
        if first == OWN:
            return {(OWN, b"")}
        return self.more.get(token_hash) or {(first, self.under[first])}

    def pairs(self) -> Iterator[tuple[bytes, int, bytes]]:
        """Every (hash, erase record, stored row hash) learned."""
        for token_hash in self.first:
            for record, stored in self.learns(token_hash):
                yield token_hash, record, stored

    def learn(self, token_hash: bytes, record: int, stored: bytes) -> bool:
        """Remember that erase record `record`, showing stored row hash `stored`, named `token_hash`; whether new."""
        known = self.first.get(token_hash)
        if record == OWN:
            self.first[token_hash] = OWN
            self.more.pop(token_hash, None)
            return known is None
        if known == OWN:
            return False
        self.under.setdefault(record, stored)
        pair = (record, stored)
        if known is None:
            self.first[token_hash] = record
            if self.under[record] != stored:
                self.more[token_hash] = {pair}
            return True
        learns = self.more.get(token_hash)
        if learns is not None:
            learns.add(pair)
        elif pair != (known, self.under[known]):
            self.more[token_hash] = {(known, self.under[known]), pair}
        return False

    def prune(self) -> None:
        """Forget the stored hashes of records no hash's first learn names (after a rebuild dropped some)."""
        named = set(self.first.values())
        self.under = {record: stored for record, stored in self.under.items() if record in named}


def rebuilt_set(
    known: LearnedHashes,
    read: LearnedHashes,
    failing: Mapping[int, bytes | None],
    upto: int,
    matches: bool,
    verified: int | None = None,
) -> LearnedHashes:
    """The erased-token set after a rebuilding read (see the module's doc).

    `known`: the set before; `read`: the hashes the read learned from rows that hold; `failing`: the rows the read
    selected that do not hold, each with the stored row hash the read counted (None: its fields were not read);
    `upto`: the head the read was counted to (0: none); `matches`: whether the count matched that head's signed
    commitment. `verified`: the head whose commitment the replica verified last (None: `upto`) - an unmatched read
    learns from the rows above it, as a round's read does while no mismatch stands (review 49, R49-2: learning only
    above `upto`, the rebuild rounds, which replace those reads while a mismatch stands, never learned another
    replica's genuine erasures that a newer checkpoint already covered).
    """
    if not matches:
        floor = upto if verified is None else min(verified, upto)
        kept = known.copy()
        for token_hash, record, stored in read.pairs():
            if record > floor:
                kept.learn(token_hash, record, stored)
        return kept
    kept = LearnedHashes()
    for token_hash, record, stored in known.pairs():
        if record == OWN or record > upto or (record in failing and failing[record] == stored):
            kept.learn(token_hash, record, stored)
    for token_hash, record, stored in read.pairs():
        kept.learn(token_hash, record, stored)
    kept.prune()
    return kept
