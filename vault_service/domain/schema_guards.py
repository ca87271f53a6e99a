"""The vault schema set against its migrations: what `audit verify` reports (attack 43, A43-4/A43-5).

What guards the vault's tables - constraints, indexes, triggers (deferred constraint triggers too), rules,
row-security policies, the functions the vault and those triggers run, owners, grants and columns - is read
from pg_catalog (adapters/postgres/schema_catalog.py) as one digest per guard, and compared with the manifest that
`scripts/gen_vault_schema_manifest.py` generated from a fresh run of `migrations/` (vault_schema_manifest.py,
checked fresh by tests as the generated protos are). Any difference is a finding: a guard the migrations do
not define (the owner's deferred trigger copying erased rows back, A43-5), one they define that is missing
(`tokens_token_unique` dropped beside a shadow row, A43-4) or one whose definition differs (a replaced
`vault.erase_tokens`, A41-3's vector). It is seen only when verify runs: a trigger removed again before
then leaves no trace here.
"""

from __future__ import annotations

from collections.abc import Mapping


def schema_differences(found: Mapping[str, str], expected: Mapping[str, str]) -> tuple[str, ...]:
    """Each guard that differs between the database (`found`) and the migrations (`expected`), in words, sorted."""
    differences = [f"{key} is in no migration" for key in found.keys() - expected.keys()]
    differences += [f"{key} is missing (a migration defines it)" for key in expected.keys() - found.keys()]
    differences += [
        f"{key} differs from its migration's definition"
        for key in found.keys() & expected.keys()
        if found[key] != expected[key]
    ]
    return tuple(sorted(differences))
