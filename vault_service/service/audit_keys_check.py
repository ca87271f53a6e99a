"""Whether the audit keys loaded are the ones the verified chain recorded (ninth insider round, Break 1).

who-saw finds a token's reveals and erasures by their keyed hashes, under the audit keys it has
loaded. An audit key the chain names but that is not loaded (retired, deleted), or that is loaded
but is not the key made under its id (its wrapped key replaced by another key the KEK wraps),
would make who-saw answer "0 reveal(s)" for every earlier token. The chain names each audit key
in the `data-key-insert`/`data-key-update` rows the database writes for every change of
vault.data_keys, with the key's check value (migration 0024); those rows are covered by the
hash chain and the signed checkpoints like any other. A report is made only when every audit key
the chain names is loaded and has the check value the chain recorded for it.

A key made before migration 0024 has no check value in its insert row: the service records it
later, once (review A, finding 10). Until it does, the serving role could swap the key's wrapped
key (after a KEK rotation) and have the swapped key's check value recorded instead. Such a late
check value is trusted only if it was recorded at the 0024 rollout: `late_check_values` names the
record that holds it, for the operator to set against the time of that rollout.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence

from vault_service.domain.audit import AuditRecord
from vault_service.domain.crypto import DataKey
from vault_service.domain.key_check import check_value

_KEY_ACTIONS = ("data-key-insert", "data-key-update")
_KEY_ENTRY = re.compile(r"(?:ok: )?(\d+) (\w+) (\w+)(?: check ([0-9a-f]+))?")


def _audit_key_entries(records: Iterable[AuditRecord]) -> Iterator[tuple[AuditRecord, int, bytes | None]]:
    """Each audit key a data-key row names: (the row, the key id, the check value it records if any)."""
    for record in records:
        if record.event.action not in _KEY_ACTIONS:
            continue
        for entry in record.event.outcome.split(", "):
            match = _KEY_ENTRY.fullmatch(entry)
            if match is not None and match.group(2) == "audit":
                yield record, int(match.group(1)), bytes.fromhex(match.group(4)) if match.group(4) else None


def recorded_audit_keys(records: Iterable[AuditRecord]) -> dict[int, set[bytes]]:
    """The audit key ids the records name, each with the check values recorded for it."""
    named: dict[int, set[bytes]] = {}
    for _, key_id, check in _audit_key_entries(records):
        checks = named.setdefault(key_id, set())
        if check is not None:
            checks.add(check)
    return named


def late_check_values(records: Iterable[AuditRecord]) -> list[str]:
    """A note for each audit key whose check value the records hold only after the key's insert row."""
    first_check: dict[int, AuditRecord] = {}
    checked_at_insert: set[int] = set()
    for record, key_id, check in _audit_key_entries(records):
        if check is None or key_id in first_check:
            continue
        first_check[key_id] = record
        if record.event.action == "data-key-insert":
            checked_at_insert.add(key_id)
    return [
        f"audit key {key_id}: check value recorded late, in record {record.record_id}"
        f" ({record.at.isoformat(timespec='seconds')}), after the key's insert row; trusted only if recorded"
        " at the migration 0024 rollout (docs/production.md)"
        for key_id, record in sorted(first_check.items())
        if key_id not in checked_at_insert
    ]


def audit_keys_problem(records: Iterable[AuditRecord], audit_keys: Sequence[DataKey]) -> str | None:
    """Why no report may be made with `audit_keys` from `records` (verified ones); None when it may."""
    loaded = {key.key_id: key for key in audit_keys}
    for key_id, checks in sorted(recorded_audit_keys(records).items()):
        key = loaded.get(key_id)
        if key is None:
            return (
                f"audit key {key_id}, named by the audit log, is not loaded: reveals and erasures hashed under it"
                " cannot be found. Check its row in vault.data_keys (its state, the data-key-update rows of the log)"
            )
        if len(checks) > 1:
            return f"the audit log records {len(checks)} different check values for audit key {key_id}: which is it?"
        if not checks:
            return (
                f"the audit log records no check value for audit key {key_id}: start the vault service once"
                " (it records the check value of keys made before migration 0024), then ask again"
            )
        if check_value(key.material) not in checks:
            return (
                f"audit key {key_id} as loaded is not the key the audit log recorded (its check value differs):"
                " its wrapped key was replaced. The database owner restores it from vault.replaced_wrapped_keys"
            )
    return None
