"""Which erased tokens a replica keeps after re-reading every erase row (review 47, R47-1; attack 49, A49-1/A49-1b).

After a mismatch with a signed checkpoint's erase-row commitment a running replica re-reads every erase row from the
log's start and rebuilds its erased-token set from that read: an erase row hidden while its learn window passed it is
learned, a hash learned from a reveal row relabelled `erase` (and put back) is dropped. The read is the database
owner's to shape as well, so it is counted into the running digest up to the head of the newest signed checkpoint the
replica verifies, and what it may change depends on that count:
- it matches the commitment: the rows up to that head are exactly the signed erase rows (id and stored row hash), so
  a hash learned from a row at or below the head that the read did not select at all is dropped; one whose row was
  selected but does not hold now (its fields changed, its stored hash kept) is kept - that row is a signed erase row;
- it does not (A49-1: an old committed erase row relabelled for the length of that read; A49-1b: an old reveal row
  relabelled `erase`): nothing is dropped, and nothing is learned from rows at or below the head the replica verified
  last (rows above it are learned, as every round's read learns them: R49-2);
- rows above the head no signed commitment covers: learned from as every round's read learns them, never a reason
  to drop a hash (a hash learned from such a row is kept).
This replica's own erasures (record 0) are always kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Set


def rebuilt_set(
    known: Mapping[bytes, int],
    read: Mapping[bytes, int],
    failing: Set[int],
    upto: int,
    matches: bool,
    verified: int | None = None,
) -> dict[bytes, int]:
    """The erased-token set after a rebuilding read (see the module's doc): each hash and the erase record it came from.

    `known`: the set before; `read`: the hashes the read learned from rows that hold; `failing`: ids of rows the read
    selected that do not hold; `upto`: the head the read was counted to (0: none); `matches`: whether the count
    matched that head's signed commitment. `verified`: the head whose commitment the replica verified last (None:
    `upto`) - an unmatched read learns from the rows above it, as a round's read does while no mismatch stands (review
    49, R49-2: learning only above `upto`, the rebuild rounds, which replace those reads while a mismatch stands, never
    learned another replica's genuine erasures that a newer checkpoint already covered).
    """
    if not matches:
        floor = upto if verified is None else min(verified, upto)
        kept = dict(known)
        for token_hash, record in read.items():
            if record > floor:
                kept.setdefault(token_hash, record)
        return kept
    kept = {token_hash: 0 for token_hash, record in known.items() if record == 0}
    for token_hash, record in read.items():
        kept.setdefault(token_hash, record)
    for token_hash, record in known.items():
        if record > upto or record in failing:
            kept.setdefault(token_hash, record)
    return kept
