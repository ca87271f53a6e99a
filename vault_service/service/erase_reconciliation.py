"""Erased tokens reconciled with the verified erase rows (insider round 9, Break 2).

Since migration 0023 an erase row names the tokens it erased by their keyed hashes under the
audit data key. The database cannot check those hashes (it has no audit key): `vault.erase_tokens`
stores what its caller gives, and the serving role may call it directly - erase token A with a
row naming token B, or nothing real. The chain then verifies, and who-saw showed the lie as
verified. Only a holder of the audit keys can compare the two, so `audit verify` does:

- every hash an erase row names is the hash, under some loaded audit key, of an erased token;
- every erased token (`vault.tokens.erased_at` set) is named by exactly one erase row, once;
- an erase row that names tokens says it erased as many as it names (its outcome,
  `ok: N erased, ...`, written by the same function).

Erasures made before migration 0023 have rows that name no tokens. The boundary is read from the
chain, not from the time the migration ran (which the serving role cannot read): erase rows
before the first erase row naming any token are "rows before erase rows named tokens". An erased
token named by no row is accounted to them - counted, not a finding - only when one of those rows
is at least as new as the token's erasure (the erasure and its row share one transaction:
`erased_at` is its start, the row's time the clock after) and the rows' erased counts add up to
exactly the number of such tokens. The serving role can write such a row itself (it inserts the
service's audit rows), but only before its first lying erasure names a token, and a row it adds
claims erasures no unnamed token fills: the totals then differ. After the first naming row, an
erase row that erased tokens and names none is a finding.

Erased tokens are read once before the log and once after (the service erases meanwhile): the
earlier read (every erasure in it has its row in the log read next) is checked for names, the
later one (holding every erasure whose row the log read saw) resolves the names. Findings name
the audit row and describe a token by its type and erasure time, never the token.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from vault_service.domain.audit import AuditRecord
from vault_service.domain.checkpoints import Finding
from vault_service.domain.crypto import DataKey
from vault_service.service.ports import ErasedToken
from vault_service.service.revealing import reveal_hasher

_ERASED_COUNT = re.compile(r"ok: (\d+) erased")
"""The erased count of an erase row's outcome, as `vault.erase_tokens` writes it (since migration 0006)."""


class ErasedTokenReader(Protocol):
    """Where the erased tokens are read from (vault.tokens)."""

    def erased_tokens(self) -> list[ErasedToken]:
        """Every erased token with its type and erasure time."""
        ...


@dataclass(frozen=True)
class ErasureReconciliation:
    """The erased tokens set against the erase rows of the verified log."""

    named: int
    """Erased tokens named by exactly one erase row."""
    before_naming: int
    """Erased tokens accounted to erase rows written before erase rows named tokens (migration 0023)."""
    findings: tuple[Finding, ...] = ()

    @property
    def consistent(self) -> bool:
        """True when every erasure and every erase row agree."""
        return not self.findings


def _erased_count(outcome: str) -> int:
    match = _ERASED_COUNT.match(outcome)
    return int(match.group(1)) if match else 0


def _describe(token: ErasedToken) -> str:
    return f"an erased {token.token_type} token (erased at {token.erased_at.isoformat(timespec='seconds')})"


def _hashes_of(tokens: Iterable[ErasedToken], audit_keys: Sequence[DataKey]) -> dict[bytes, ErasedToken]:
    hashers: list[Callable[[str], bytes]] = [reveal_hasher(key) for key in audit_keys]
    return {hash_of(token.token): token for token in tokens for hash_of in hashers}


def reconcile_erasures(
    records: Sequence[AuditRecord],
    erased_before: Sequence[ErasedToken],
    erased_after: Sequence[ErasedToken],
    audit_keys: Sequence[DataKey],
) -> ErasureReconciliation:
    """Set the erased tokens against the erase rows among `records` (the verified ones), see the module doc.

    `erased_before` was read before `records`, `erased_after` after them.
    """
    erase_rows = [r for r in records if r.event.action == "erase"]
    first_naming = next((n for n, r in enumerate(erase_rows) if r.event.revealed), len(erase_rows))
    naming_rows, findings = _names(erase_rows[first_naming:], _hashes_of(erased_after, audit_keys))
    tokens = {t.token: t for t in erased_after}
    for token, rows in naming_rows.items():
        if len(rows) > 1:
            listed = ", ".join(map(str, rows))
            findings.append(Finding(rows[1], f"erase records {listed} all name {_describe(tokens[token])}"))
    unnamed = [t for t in erased_before if t.token not in naming_rows]
    before_naming, unaccounted = _accounted_to_rows_before_naming(unnamed, erase_rows[:first_naming])
    findings += [Finding(None, f"{_describe(t)} is named by no erase record") for t in unaccounted]
    claimed = sum(_erased_count(r.event.outcome) for r in erase_rows[:first_naming])
    if not unaccounted and claimed != before_naming:
        findings.append(
            Finding(
                erase_rows[0].record_id,
                f"erase records before erase records named tokens say they erased {claimed} token(s),"
                f" but {before_naming} erased token(s) are named by no erase record",
            )
        )
    named = sum(1 for rows in naming_rows.values() if len(rows) == 1)
    return ErasureReconciliation(named, before_naming, tuple(findings))


def _names(
    naming_era: Sequence[AuditRecord], by_hash: dict[bytes, ErasedToken]
) -> tuple[dict[str, list[int]], list[Finding]]:
    """Erased token -> the erase rows naming it (once per naming); findings for rows naming others or miscounting."""
    naming_rows: dict[str, list[int]] = defaultdict(list)
    findings: list[Finding] = []
    for row in naming_era:
        said, names = _erased_count(row.event.outcome), len(row.event.revealed)
        if said != names:
            reason = f"erase record {row.record_id} says it erased {said} token(s) but names {names}"
            findings.append(Finding(row.record_id, reason))
        unknown = 0
        for token_hash in row.event.revealed:
            token = by_hash.get(token_hash)
            if token is None:
                unknown += 1
            else:
                naming_rows[token.token].append(row.record_id)
        if unknown:
            reason = (
                f"erase record {row.record_id} names {unknown} token(s) that are not erased"
                " (or hashed under an audit key that is not loaded)"
            )
            findings.append(Finding(row.record_id, reason))
    return naming_rows, findings


def _accounted_to_rows_before_naming(
    unnamed: Sequence[ErasedToken], rows: Sequence[AuditRecord]
) -> tuple[int, list[ErasedToken]]:
    """How many `unnamed` tokens the rows' erased counts cover, each by a row at least as new; and the rest.

    Newest token first: every row new enough for a token is new enough for the older ones, so
    taking from the pool of rows newer than the token, in that order, covers as many as can be.
    """
    newest_first = sorted(rows, key=lambda r: r.at, reverse=True)
    covered, available, taken = 0, 0, 0
    left: list[ErasedToken] = []
    for token in sorted(unnamed, key=lambda t: t.erased_at, reverse=True):
        while taken < len(newest_first) and _not_older(newest_first[taken].at, token.erased_at):
            available += _erased_count(newest_first[taken].event.outcome)
            taken += 1
        if available:
            available -= 1
            covered += 1
        else:
            left.append(token)
    return covered, left


def _not_older(row_at: datetime, erased_at: datetime) -> bool:
    """Whether a row written at `row_at` can be the row of an erasure whose transaction started at `erased_at`."""
    return row_at >= erased_at
