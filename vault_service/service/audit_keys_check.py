"""Whether the audit keys loaded are the ones the verified chain recorded (ninth insider round, Break 1).

who-saw finds a token's reveals and erasures by their keyed hashes, under the audit keys it has
loaded. An audit key the chain names but that is not loaded (retired, deleted), or that is loaded
but is not the key made under its id (its wrapped key replaced by another key the KEK wraps),
would make who-saw answer "0 reveal(s)" for every earlier token. The chain names each audit key
in the `data-key-insert`/`data-key-update` rows the database writes for every change of
vault.data_keys, with the key's check value (migration 0024); those rows are covered by the
hash chain and the signed checkpoints like any other. A report is made only when every audit key
the chain names is loaded and has the check value the chain recorded for it.

A check value is recorded in its key's insert row, with one exception: the keys made before
migration 0024, whose check values the service records once, at its first key refresh after the
migration (review A, finding 10). Those keys are the ones the chain names before its first check
value: no data-key row carried one before 0024, and no row can be added in the past (chain,
signed checkpoints). Any other check value recorded after its key's insert row - for an audit key
the database owner inserted without one, its check value recorded later, so that it names whatever
key the row held then - fails verification (attack 10, finding 6). A check value is set once
(0024's trigger refuses the serving role a change; the owner's change leaves a second value in the
chain, which fails as well), so what no chain shows is only a swap between the migration and the
service's first recording. That stays a note (`LateCheckValues.notes`), with the recording's time,
for the operator to set against the rollout's (docs/production.md).

The rule assumes a chain that names every audit key before 0024 at least once: data-key rows
begin at migration 0007, and upgrades start at 0010 or later (docs/production.md). An audit key
made under 0001-0006 and never changed since would be named first by its late check value and
fail as made after 0024 - upgrades from before 0010 are neither supported nor tested, so no
vault meets such a chain.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from vault_service.domain.audit import AuditRecord
from vault_service.domain.crypto import DataKey
from vault_service.domain.key_check import check_value

KEY_ACTIONS = ("data-key-insert", "data-key-update")
"""The actions of the records naming data keys (and their check values): the only ones read here."""
_KEY_ENTRY = re.compile(r"(?:ok: )?(\d+) (\w+) (\w+)(?: check ([0-9a-f]+))?")


@dataclass(frozen=True)
class _KeyEntry:
    """One key a data-key row names: where in the chain, which key, and the check value if it has one."""

    index: int
    record: AuditRecord
    key_id: int
    purpose: str
    check: bytes | None


def _key_entries(records: Sequence[AuditRecord]) -> Iterator[_KeyEntry]:
    """Each key the data-key rows name (every purpose), in chain order."""
    for index, record in enumerate(records):
        if record.event.action not in KEY_ACTIONS:
            continue
        for entry in record.event.outcome.split(", "):
            match = _KEY_ENTRY.fullmatch(entry)
            if match is not None:
                check = bytes.fromhex(match.group(4)) if match.group(4) else None
                yield _KeyEntry(index, record, int(match.group(1)), match.group(2), check)


def recorded_audit_keys(records: Sequence[AuditRecord]) -> dict[int, set[bytes]]:
    """The audit key ids the records name, each with the check values recorded for it."""
    named: dict[int, set[bytes]] = {}
    for entry in _key_entries(records):
        if entry.purpose == "audit":
            checks = named.setdefault(entry.key_id, set())
            if entry.check is not None:
                checks.add(entry.check)
    return named


@dataclass(frozen=True)
class LateCheckValues:
    """The audit keys whose check value the chain holds only after their insert row, by where it was recorded."""

    at_rollout: dict[int, AuditRecord]
    """Keys made before migration 0024 (recorded by its rollout), with the row recording it: notes."""
    elsewhere: dict[int, AuditRecord]
    """Keys made since, with the row recording it: it may name a key put in their row later. Failures."""

    def notes(self) -> list[str]:
        """What to check by hand: when the rollout's recording was made (no PII: key and record ids)."""
        return [
            f"audit key {key_id}: check value recorded late, in record {record.record_id}"
            f" ({record.at.isoformat(timespec='seconds')}), for a key made before migration 0024; trusted only if"
            " recorded at the migration 0024 rollout (docs/production.md)"
            for key_id, record in sorted(self.at_rollout.items())
        ]

    def problem(self, key_id: int) -> str | None:
        """Why the check value recorded for `key_id` cannot be trusted; None when it can."""
        record = self.elsewhere.get(key_id)
        if record is None:
            return None
        return (
            f"audit key {key_id}: check value recorded late, in record {record.record_id}"
            f" ({record.at.isoformat(timespec='seconds')}), after the key's insert row, for a key made after"
            " migration 0024 (whose keys get theirs when made): it names whatever key was in the row then."
            " Check the key's row in vault.data_keys and the data-key rows of the log"
        )


def late_check_values(records: Sequence[AuditRecord]) -> LateCheckValues:
    """Each audit key whose first check value the records hold in a row other than its insert row.

    Keys made before migration 0024 are those the chain names before its first check value (no
    data-key row could carry one before 0024): only theirs may be recorded late.
    """
    entries = list(_key_entries(records))
    first_checked = next((e.index for e in entries if e.check is not None), len(records))
    made_before = {e.key_id for e in entries if e.index < first_checked}
    first_check: dict[int, _KeyEntry] = {}
    for entry in entries:
        if entry.check is not None:
            first_check.setdefault(entry.key_id, entry)
    at_rollout: dict[int, AuditRecord] = {}
    elsewhere: dict[int, AuditRecord] = {}
    for key_id, entry in first_check.items():
        if entry.purpose == "audit" and entry.record.event.action != "data-key-insert":
            (at_rollout if key_id in made_before else elsewhere)[key_id] = entry.record
    return LateCheckValues(at_rollout, elsewhere)


def one_key_under_two_ids(records: Sequence[AuditRecord]) -> str | None:
    """Two key ids (any purpose) the data-key rows name with one check value; None when there are none.

    One key under two ids is a key's material come back (attack 24, F1: a retired DEK inserted
    again as the active one opened what crypto-shredding had shredded). Migration 0027 refuses it
    to the serving role; this finds what the owner did.
    """
    first: dict[bytes, _KeyEntry] = {}
    for entry in _key_entries(records):
        if entry.check is None:
            continue
        seen = first.setdefault(entry.check, entry)
        if seen.key_id != entry.key_id:
            return (
                f"data keys {seen.key_id} and {entry.key_id} are one key: the audit log records one check value"
                f" for both (records {seen.record.record_id} and {entry.record.record_id}). A key's material came"
                " back under a new id; what was shredded with the old one opens again"
            )
    return None


def audit_keys_problem(records: Sequence[AuditRecord], audit_keys: Sequence[DataKey]) -> str | None:
    """Why no report may be made with `audit_keys` from `records` (verified ones); None when it may.

    Every problem found is named, one after the other: one key under two ids no longer hides an
    audit key that is not the one recorded (review 23, R23-2).
    """
    problems = [one_key_under_two_ids(records), *_audit_key_problems(records, audit_keys)]
    return "; ".join(problem for problem in problems if problem is not None) or None


def _audit_key_problems(records: Sequence[AuditRecord], audit_keys: Sequence[DataKey]) -> Iterator[str]:
    """Why each audit key the records name cannot be used as loaded (nothing for one that can)."""
    loaded = {key.key_id: key for key in audit_keys}
    late = late_check_values(records)
    for key_id, checks in sorted(recorded_audit_keys(records).items()):
        key = loaded.get(key_id)
        if key is None:
            yield (
                f"audit key {key_id}, named by the audit log, is not loaded: reveals and erasures hashed under it"
                " cannot be found. Check its row in vault.data_keys (its state, the data-key-update rows of the log)"
            )
        elif len(checks) > 1:
            yield f"the audit log records {len(checks)} different check values for audit key {key_id}: which is it?"
        elif not checks:
            yield (
                f"the audit log records no check value for audit key {key_id}: start the vault service once"
                " (it records the check value of keys made before migration 0024), then ask again"
            )
        elif (problem := late.problem(key_id)) is not None:
            yield problem
        elif check_value(key.material) not in checks:
            yield (
                f"audit key {key_id} as loaded is not the key the audit log recorded (its check value differs):"
                " its wrapped key was replaced. The database owner restores it from vault.replaced_wrapped_keys"
            )
