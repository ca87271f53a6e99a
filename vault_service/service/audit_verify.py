"""`audit verify` and `who saw`: what the audit trail proves, read back from the database.

Verification needs no Vault: checkpoint signatures are checked offline against the signing
key's public keys, and the exported copy of the checkpoints is read from where it was shipped.

The log is read and verified a page at a time (`AuditReader.record_pages`): the chain's state,
the checkpoints' heads, the noted rows' hashes, the erase and data-key records and the records the
report keeps (`keep`: who-saw's token) are all it holds, so its length costs time, not memory
(review 30, R30-1). The vault's AuditReports and the service account's `audit-verify` / `who-saw`
share it. Every report made from the log (who-saw) is computed in Python from the very records that
verification read and verified, never from a second query: the database owner can make two
queries see different rows (a row-level-security policy keyed on the query's text, a view in
place of the table, an operator planted on the search path), so a second answer would carry
the first one's "verified" without having been verified (insider round 8, Break 2).

What an erase row names is reconciled with the erased tokens (`verify_audit_and_erasures`, see
erase_reconciliation): the database stores whatever keyed hashes its caller gives (round 9, Break 2),
and the audit keys loaded are checked to be the ones the verified chain recorded (audit_keys_check,
round 9, Break 1). Both count in the report's `intact`: one verdict, one place. Only that full
verification makes a `FullAuditReport`, the only report who-saw takes (attack 10, finding 6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from vault_service.domain.audit import AuditRecord, OversizedRecord, fetch_head
from vault_service.domain.checkpoints import ChainHead, Checkpoint, Finding, LogWalk
from vault_service.domain.crypto import DataKey
from vault_service.domain.errors import CatalogUnread
from vault_service.domain.pending_rows import NotedRows
from vault_service.domain.schema_guards import Guards, schema_differences
from vault_service.domain.vault_schema_manifest import EXPECTED
from vault_service.service.audit_keys_check import KEY_ACTIONS, audit_keys_problem, late_check_values
from vault_service.service.erase_reconciliation import ErasedTokenReader, ErasureReconciliation, reconcile_erasures
from vault_service.service.exported_copy import ExportedCopy, NoExportedCheckpoints, read_exported_copy, together
from vault_service.service.ports import ErasedToken
from vault_service.service.revealing import reveal_hash, reveal_hasher

DEFAULT_COPY_LAG = 10.0
"""Seconds the exported copy's newest checkpoint may be older than the database's by default: 5 intervals of 2 s."""
COPY_LAG_INTERVALS = 5
"""The default allowed lag of the exported copy, in checkpoint intervals (a log shipper flushes within a few)."""


@dataclass(frozen=True)
class CopyCoverage:
    """What the exported copy held, set against the database's newest checkpoint (attack 17, finding 5).

    Rows checkpointed in the database after the copy's newest checkpoint are vouched for by the
    database alone: its owner can delete the newest rows together with their checkpoints, which
    only a copy holding those checkpoints exposes. A copy older than the database's newest by
    more than `allowed` seconds (a shipper that stopped, a stale snapshot, one replica's lines
    only) therefore fails the verification instead of passing it as "the exported copy verified".
    """

    read: str
    """What was read from the copy ('N exported checkpoint(s) read from PATH, newest at row X (time)')."""
    newest_exported: ChainHead | None
    newest_stored: ChainHead | None
    allowed: float
    """Seconds the copy may be behind the database's newest checkpoint."""

    @property
    def behind(self) -> float:
        """Seconds between the copy's newest checkpoint and the database's newer one (0: not behind)."""
        copy, stored = self.newest_exported, self.newest_stored
        if stored is None or (copy is not None and copy.head_id >= stored.head_id):
            return 0.0
        if copy is None:
            return float("inf")
        return max(0.0, (stored.at - copy.at).total_seconds())

    @property
    def too_old(self) -> bool:
        """Whether the copy is further behind the database's newest checkpoint than allowed."""
        return self.behind > self.allowed

    def gap(self) -> str | None:
        """What the database alone vouches for (None: the copy reaches the database's newest checkpoint)."""
        copy, stored = self.newest_exported, self.newest_stored
        if stored is None or (copy is not None and copy.head_id >= stored.head_id):
            return None
        since = f"after row {copy.head_id}" if copy is not None else "of the log"
        lag = f"{self.behind:.0f} s" if self.behind != float("inf") else "all"
        return (
            f"the database's checkpoints go on to row {stored.head_id} ({_when(stored)}), {lag} beyond the exported"
            f" copy's newest: the rows {since} are vouched for by the database alone"
        )


def _when(head: ChainHead) -> str:
    return head.at.astimezone(UTC).isoformat(timespec="seconds")


def _coverage(copy: ExportedCopy, checkpoints: Sequence[Checkpoint], allowed: float) -> CopyCoverage:
    newest = copy.newest
    stored = max(checkpoints, key=lambda c: c.head.head_id, default=None)
    return CopyCoverage(
        copy.summary(), newest.head if newest else None, stored.head if stored else None, max(0.0, allowed)
    )


class VaultSchemaReader(Protocol):
    """Where what guards the vault's tables is read from (pg_catalog; adapters/postgres/schema_catalog.py)."""

    def vault_schema(self) -> Guards:
        """Each guard of the vault's tables (constraint, index, trigger, rule, policy, function...) -> its fields."""
        ...

    def catalog_additions(self) -> tuple[str, ...]:
        """Objects added to pg_catalog, inheritance of vault relations, in words (A45-3).

        CatalogUnread when the live database answers the check with an error (named as a change: R40-2).
        """
        ...


class AuditReader(Protocol):
    """What verification reads from the audit store."""

    def record_pages(self, after_id: int = 0) -> Iterator[Sequence[AuditRecord]]:
        """Every record after `after_id`, in id order, a page at a time (each read as it is asked for)."""
        ...

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint, oldest first."""
        ...


class SignatureCheck(Protocol):
    """Offline verification of a Transit signature with the key's public keys."""

    def __call__(self, public_keys: Mapping[int, str], data: bytes, signature: str) -> bool:
        """Whether `signature` is valid for `data`."""
        ...


class AuditNotVerified(Exception):
    """A report was asked of a log that did not verify."""


@dataclass(frozen=True)
class AuditReport:
    """What `verify_audit` found in the chain and checkpoints, with the records it read (the only ones to report from).

    Erasures and audit keys are not checked here: who-saw takes only a `FullAuditReport`.
    """

    rows: int
    checkpoints: int
    unanchored: int
    finding: Finding | None
    records: tuple[AuditRecord, ...] = field(default=(), repr=False, compare=False)
    """The records verified that the report kept, in order: who-saw filters these, it never asks the database
    again. Every record read unless `kept` says which."""
    copy: CopyCoverage | None = None
    """What the exported copy held and how far it reaches (None: no copy given)."""
    kept: frozenset[bytes] | None = None
    """The keyed token hashes whose records `records` holds (None: every record read; empty: none). A report
    streams the log and keeps only what its answer needs (review 30, R30-1)."""
    erase_records: tuple[AuditRecord, ...] = field(default=(), repr=False, compare=False)
    """The erase records verified, in order (reconciled with the erased tokens)."""
    key_records: tuple[AuditRecord, ...] = field(default=(), repr=False, compare=False)
    """The data-key records verified, in order (the audit keys checked against them)."""
    reveals_after_erasure: tuple[int, ...] = ()
    """Ids of the reveal records (Detokenize, served) naming a token an earlier erase record named: the erasure
    was undone in the database and the value revealed again (attack 41, A41-2). Counted in a full report's
    `intact`; who-saw still lists the token's records, these marked."""

    @property
    def intact(self) -> bool:
        """True when nothing was found in what this report checked, and the exported copy given is not too old."""
        return self.finding is None and not (self.copy is not None and self.copy.too_old)


@dataclass(frozen=True, kw_only=True)
class FullAuditReport(AuditReport):
    """`verify_audit_and_erasures`' report: the chain, checkpoints, erasures and audit keys all checked.

    The only report who-saw answers from (attack 10, finding 6): one from `verify_audit` alone is
    intact with audit keys that are not the ones the chain recorded.
    """

    erasures: ErasureReconciliation
    """The erased tokens set against the verified erase rows."""
    keys_problem: str | None
    """Why the audit keys loaded are not the ones the verified chain recorded (None when they are, or unchecked
    because the chain did not verify)."""
    keys_notes: tuple[str, ...] = ()
    """What to check by hand about the audit keys: check values the migration 0024 rollout recorded late.

    Any other late check value is a `keys_problem` (audit_keys_check): notes do not change `intact`."""
    schema_changes: tuple[str, ...] = ()
    """How the vault schema's guards differ from what the migrations define, one line each (attack 43, A43-4/A43-5;
    domain/schema_guards.py). Read once when verify runs: a guard put back before then is not seen."""

    @property
    def verified(self) -> bool:
        """True when the chain, checkpoints, erasures and audit keys hold: who-saw may answer from its records."""
        return super().intact and self.erasures.consistent and self.keys_problem is None

    @property
    def intact(self) -> bool:
        """True when nothing was found: verified, no reveal after an erasure of the token, the schema as migrated."""
        return self.verified and not self.reveals_after_erasure and not self.schema_changes


def _go_on() -> None:
    """The default `stop_check`: a report runs to its end."""


def verify_audit(
    store: AuditReader,
    public_keys: Mapping[int, str],
    check: SignatureCheck,
    exported: Path | None,
    max_copy_lag: float = DEFAULT_COPY_LAG,
    stop_check: Callable[[], None] = _go_on,
    sent: ExportedCopy | None = None,
    keep: frozenset[bytes] | None = None,
    named: Path | None = None,
    same_token: Mapping[bytes, frozenset[bytes]] | None = None,
) -> AuditReport:
    """Verify the chain, every checkpoint in the database and, with `exported`, every exported one.

    The service may append and checkpoint while this reads, so the reads go from the newest
    evidence back: the exported copy, then the database's checkpoints, then the rows. A checkpoint
    is exported only once stored (or, beside a planted checkpoint, instead of being stored), and
    made only once its rows are committed, so every checkpoint read vouches for rows the later
    read sees. Read the other way round, a checkpoint made in between named rows the earlier read
    missed: a false "TAMPERED". An exported copy without any checkpoint, beside a database that
    holds some, raises NoExportedCheckpoints: it proves nothing; one with lines that look like
    checkpoints but cannot be read raises UnreadableExportedCopy (exported_copy.py). The report
    says what the copy held, and is not intact when the copy's newest checkpoint is older than
    the database's by more than `max_copy_lag` seconds (`CopyCoverage`).

    Every note in the copy of rows a replica appended and had not anchored yet must hold: its
    rows in the log with the hashes noted (domain/pending_rows.py; retest 17, finding A), else
    the report is TAMPERED at the note's first row (after any finding of the chain itself).

    The records are read and checked a page at a time (`AuditReader.record_pages`), so the log's
    length costs time, not memory: of the records only those `keep` names are kept (the records
    revealing or erasing a token of those keyed hashes: who-saw's answer; None keeps every record,
    an empty set none), besides the erase and data-key records the full verification checks
    (review 30, R30-1: the whole log held in memory killed a 1 GiB pod near 0.45 M rows). A row larger
    than any the vault writes is never read (`OversizedRecord`): the report is TAMPERED at it, unless
    the chain broke before it (attack 28, F3).

    `stop_check()` is called between the phases (reads and checks) and after every page, and
    raises to end the report there (its deadline passed, its caller went away: the vault's
    AuditReports). `sent`: a copy already read (one a caller sent with its call), verified
    against together with `exported`: a copy sent may only add evidence, never take the vault's
    own away (attack 28, F5: a stale copy sent passed a log whose newest rows and checkpoint the
    owner had deleted); each must hold a checkpoint when the database does, and the report names
    both. `named`: how `exported` is named in the report and its refusals (None: its path).

    A served reveal record naming a token hash an earlier erase record named is reported
    (`reveals_after_erasure`): a reveal row names only tokens whose value was shown, and an erased token has
    none - unless the erasure was undone in the database (attack 41, A41-2). `same_token`: each hash of an
    erased token -> its hashes under every audit key, so that a reveal hashed under a newer audit key than
    its erasure is matched too (None: hashes compared as they are).
    """
    own = read_exported_copy(exported, named) if exported is not None else None
    read = [c for c in (sent, own) if c is not None]
    copy = together(*read) if len(read) == 2 else read[0] if read else None
    copies = list(copy.checkpoints) if copy is not None else []
    stop_check()
    checkpoints = store.checkpoints()
    for each in read:
        if not each.checkpoints and checkpoints:
            raise NoExportedCheckpoints(each.path, len(checkpoints))
    stop_check()
    walk = LogWalk(checkpoints, copies, lambda data, signature: check(public_keys, data, signature))
    noted = NotedRows(copy.pending) if copy is not None else None
    kept: list[AuditRecord] = []
    erase_records: list[AuditRecord] = []
    key_records: list[AuditRecord] = []
    erased_hashes: dict[bytes, tuple[datetime, int]] = {}  # each token hash erase records named -> the first's time, id
    after_erasure: list[int] = []
    aliases = same_token or {}
    oversized: Finding | None = None
    try:
        for page in store.record_pages():
            for record in page:
                walk.add(record)
                if noted is not None:
                    noted.add(record)
                if keep is None or not keep.isdisjoint(record.event.revealed):
                    kept.append(record)
                action = record.event.action
                if action == "erase":
                    erase_records.append(record)
                    for token_hash in record.event.revealed:
                        for same in aliases.get(token_hash, (token_hash,)):
                            erased_hashes.setdefault(same, (record.at, record.record_id))
                elif (
                    action == "detokenize"
                    and erased_hashes
                    and not erased_hashes.keys().isdisjoint(record.event.revealed)
                    and _revealed_after_erasure(record, erased_hashes)  # served, or refused after comparing (A43-2)
                ):
                    after_erasure.append(record.record_id)
                elif action in KEY_ACTIONS:
                    key_records.append(record)
            stop_check()
    except OversizedRecord as error:  # never read: the report stops there, tampered (attack 28, F3)
        oversized = Finding(error.record_id, str(error))
    finding = walk.finding() if oversized is None or walk.broken else oversized
    stop_check()
    if finding is None and noted is not None:
        finding = noted.finding()
    coverage = _coverage(copy, checkpoints, max_copy_lag) if copy is not None else None
    return AuditReport(
        walk.rows,
        len(checkpoints),
        walk.unanchored,
        finding,
        tuple(kept),
        coverage,
        keep,
        tuple(erase_records),
        tuple(key_records),
        tuple(after_erasure),
    )


REVEAL_IN_FLIGHT = timedelta(seconds=3)
"""How much later than an erase record a reveal record of the same token may be written without a finding - only for
reveal records that do not say what their fetch saw (written before attack 43's A43-1 fix).

A Detokenize that fetched the row just before the erasure committed writes its row after the erasure's (its
append may wait for the chain's lock, 2 s at most, migration 0035): that value was shown before it was erased.
The database owner's undo followed at once by a colluding reveal passed within this bound (A43-1); a record
written since says the newest audit id its fetch saw (`domain/audit.fetch_head`), and the rule is exact there."""


def _revealed_after_erasure(record: AuditRecord, erased: Mapping[bytes, tuple[datetime, int]]) -> bool:
    """Whether a reveal record names a token whose value its fetch read after the token's erasure.

    Served reveals and refused ones alike: a Detokenize row names tokens only when their values were opened - a
    reveal, or the refusal of a purpose spelling a value the caller would see in plain, which confirms a guess of
    the value (attack 43, A43-2: after the owner's undo, that refusal alone confirmed the erased value).

    A record that says the newest audit id its fetch saw (`fetch_head`): after the erasure if that id is at or past
    the erase record's - the erase record commits with the erasure, and the chain's lock numbers rows in commit
    order, so the fetch's snapshot held the erasure exactly then; whenever the record itself was written (A43-1:
    the owner's undo and a reveal within 3 s passed; a legit reveal stalled past 3 s was a false alarm). A record
    without it (written before that fix): written more than REVEAL_IN_FLIGHT after the erase record.
    """
    head = fetch_head(record.event.outcome)
    for token_hash in record.event.revealed:
        erasure = erased.get(token_hash)
        if erasure is None:
            continue
        at, erase_id = erasure
        if (head >= erase_id) if head is not None else (record.at - at > REVEAL_IN_FLIGHT):
            return True
    return False


def verify_audit_and_erasures(
    store: AuditReader,
    erased: ErasedTokenReader,
    audit_keys: Sequence[DataKey],
    public_keys: Mapping[int, str],
    check: SignatureCheck,
    exported: Path | None,
    max_copy_lag: float = DEFAULT_COPY_LAG,
    stop_check: Callable[[], None] = _go_on,
    sent: ExportedCopy | None = None,
    keep: frozenset[bytes] | None = None,
    named: Path | None = None,
    *,
    schema: VaultSchemaReader,
) -> FullAuditReport:
    """`verify_audit`, erasures reconciled, `audit_keys` checked against the verified chain, the schema compared.

    Every erased token is reconciled with the verified erase rows (`reconcile_erasures`), and the
    audit keys loaded are checked to be the ones the chain recorded (`audit_keys_problem`). The
    erased tokens are read before the log and again after it: see erase_reconciliation.
    `schema`: what guards the vault's tables now, compared with what the migrations define (the generated
    manifest, domain/vault_schema_manifest.py): any difference is in `schema_changes` and the report not intact
    (attack 43: a dropped `tokens_token_unique`, a deferred trigger, a replaced `vault.erase_tokens`).
    `stop_check()`, `sent`, `keep` and `named` as in `verify_audit`; `stop_check` between every phase.
    """
    # CatalogCheckInterrupted (the check's query cancelled on every try: A48-1) is raised: verify could not complete
    try:
        additions = schema.catalog_additions()
    except CatalogUnread as error:  # a catalog the check cannot read is named, not a traceback (R40-2)
        additions = (str(error),)
    schema_changes = additions + schema_differences(schema.vault_schema(), EXPECTED)
    stop_check()
    erased_before = erased.erased_tokens()
    stop_check()
    same_token = same_token_hashes(erased_before, audit_keys)
    report = verify_audit(store, public_keys, check, exported, max_copy_lag, stop_check, sent, keep, named, same_token)
    erased_after = erased.erased_tokens()
    stop_check()
    erasures = reconcile_erasures(report.erase_records, erased_before, erased_after, audit_keys)
    stop_check()
    verified = report.finding is None
    keys_problem = audit_keys_problem(report.key_records, audit_keys) if verified else None
    return FullAuditReport(
        report.rows,
        report.checkpoints,
        report.unanchored,
        report.finding,
        report.records,
        report.copy,
        report.kept,
        report.erase_records,
        report.key_records,
        report.reveals_after_erasure,
        erasures=erasures,
        keys_problem=keys_problem,
        keys_notes=tuple(late_check_values(report.key_records).notes()) if verified else (),
        schema_changes=schema_changes,
    )


def who_saw(report: FullAuditReport, audit_keys: list[DataKey], token: str) -> list[AuditRecord]:
    """Every audited reveal, erasure and who-saw question of `token` (by any client), oldest first, verified only.

    The records are those `report`'s verification read and verified; a record names a token
    when its keyed token hashes (`revealed`, covered by the row hash) hold the token's hash under
    any audit key. AuditNotVerified unless the report is a `FullAuditReport` and intact: the log
    tampered with, erasures that its erase rows do not name as they are, or an audit key the chain
    names not loaded or not the key the chain recorded (`verify_audit_and_erasures` checks the last
    two, with `audit_keys`). A report of `verify_audit` alone is refused: it never checked the audit keys.
    """
    if not isinstance(report, FullAuditReport):
        raise AuditNotVerified(
            "the audit keys and erasures were not checked (verify_audit_and_erasures): no report is made from it"
        )
    if not report.verified:  # a reveal after an erasure (intact False) is marked in the answer, not refused
        raise AuditNotVerified(report.keys_problem or "the audit log did not verify: no report is made from it")
    hashes = token_hashes(audit_keys, token)
    if report.kept is not None and not hashes <= report.kept:
        raise ValueError("the report did not keep this token's records: verify with keep=token_hashes(...)")
    return [record for record in report.records if not hashes.isdisjoint(record.event.revealed)]


def token_hashes(audit_keys: Sequence[DataKey], token: str) -> frozenset[bytes]:
    """`token`'s keyed hashes under every audit key: what its reveals' and erasures' records hold (`keep`)."""
    return frozenset(reveal_hash(key, token) for key in audit_keys)


def same_token_hashes(tokens: Sequence[ErasedToken], audit_keys: Sequence[DataKey]) -> dict[bytes, frozenset[bytes]]:
    """Each hash of each erased token under any of `audit_keys` -> all of that token's hashes (few: erasures)."""
    hashers = [reveal_hasher(key) for key in audit_keys]
    same: dict[bytes, frozenset[bytes]] = {}
    for token in tokens:
        every = frozenset(hash_of(token.token) for hash_of in hashers)
        same.update(dict.fromkeys(every, every))
    return same
