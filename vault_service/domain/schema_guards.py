"""The vault schema set against its migrations: what `audit verify` reports (attack 43, A43-4/A43-5; W46-9).

What guards the vault's tables - constraints, indexes, triggers (deferred constraint triggers too), rules,
row-security policies, the functions the vault and those triggers run, owners, grants and columns - is read
from pg_catalog (adapters/postgres/schema_catalog.py) as a few fields per guard, and compared with the manifest
that `scripts/gen_vault_schema_manifest.py` generated from a fresh run of `migrations/` (vault_schema_manifest.py,
checked fresh by tests as the generated protos are). Any difference is a finding: a guard the migrations do
not define (the owner's deferred trigger copying erased rows back, A43-5), one they define that is missing
(`tokens_token_unique` dropped beside a shadow row, A43-4) or one whose fields differ (a replaced
`vault.erase_tokens`, A41-3's vector; a disabled trigger, A45-4). A differing guard is said with how: each
field that moved, a flag from what to what ("state disabled (migrations: enabled)"), a text (a definition, a
body) by the SHA-256 it has now. It is seen only when verify runs: a trigger removed again before then leaves
no trace here.
"""

from __future__ import annotations

from collections.abc import Mapping

DIGEST_PREFIX = "sha256:"
"""A field holding this prefix is a text's SHA-256 (schema_catalog.py): said as changed, with its digest now."""

Guards = Mapping[str, Mapping[str, str]]
"""Guard key ("trigger t on vault.tokens") -> field name -> value (a flag in words, or `sha256:<hex>` of a text)."""


def _said(value: str | None) -> str:
    if value is None:
        return "absent"
    return f"sha256 {value.removeprefix(DIGEST_PREFIX)}" if value.startswith(DIGEST_PREFIX) else value


def how_it_differs(found: Mapping[str, str], expected: Mapping[str, str]) -> str:
    """Each field of a guard that differs, in words: '<field> <now> (migrations: <then>)', '; '-joined.

    A text's field (a definition, a body) is said as differing, with the SHA-256 it has now: the manifest
    holds only digests, so what changed inside it is for the reader to diff against the migrations.
    """
    said = []
    for field in [*expected, *(name for name in found if name not in expected)]:
        now, then = found.get(field), expected.get(field)
        if now == then:
            continue
        if (now or "").startswith(DIGEST_PREFIX) or (then or "").startswith(DIGEST_PREFIX):
            said.append(f"{field} differs (now {_said(now)})")
        elif field == "null" and {now, then} == {"NOT NULL", "nullable"}:  # "null nullable" read as a typo (W47-12)
            said.append(f"NOT NULL {'dropped' if now == 'nullable' else 'added'} (migrations: {then})")
        else:
            said.append(f"{field} {_said(now)} (migrations: {_said(then)})")
    return "; ".join(said)


def schema_differences(found: Guards, expected: Guards) -> tuple[str, ...]:
    """Each guard that differs between the database (`found`) and the migrations (`expected`), in words, sorted."""
    differences = [f"{key} is in no migration" for key in found.keys() - expected.keys()]
    differences += [f"{key} is missing (a migration defines it)" for key in expected.keys() - found.keys()]
    differences += [
        f"{key} differs from its migration's definition: {how_it_differs(found[key], expected[key])}"
        for key in found.keys() & expected.keys()
        if found[key] != expected[key]
    ]
    return tuple(sorted(differences))
