"""Key rotation for the security team: KEK rewrap, DEK re-encryption, fingerprint re-index.

Every step is online (the service keeps serving; writers check the live key generation) and
resumable (the work list is "rows not under the active key yet", so a killed job simply
continues where the database says it stands). Every step is audited: an intent row ("started",
with the ticket) before its work and an outcome row ("ok: ...") after it. Between the two runs
`before_work`: the admin commands pass a round that anchors the intent row in the audit chain and
raises when it cannot, so no key job runs off the record (review 18, R18-2; service/own_rows_round.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial

from vault_service.domain.admin_reason import check_reason
from vault_service.domain.audit import AuditEvent
from vault_service.domain.crypto import DataKey, SealBroken, fingerprint, open_sealed, seal
from vault_service.domain.errors import (
    InvalidRequest,
    KekVersionsInUse,
    KeptCopiesDiffer,
    KeysUnavailable,
    NextFingerprintsAltered,
    RotationUnderWay,
    StorageError,
    StoredValueAltered,
    VaultError,
)
from vault_service.domain.identity import Caller
from vault_service.domain.keys import KeyState
from vault_service.domain.token_types import TokenType
from vault_service.service.kept_copies import not_retired_message, retired_keys_refusal, unused_keys_checked
from vault_service.service.keyring import ENCRYPTION, FINGERPRINT, KeyManager
from vault_service.service.ports import (
    CLOSING_PREFIX,
    HOLD_LOST_NOTE,
    INTENT_HELD,
    INTENT_UNHELD,
    AuditLog,
    InterruptedJob,
    JobLiveness,
    KekConfig,
    KeyStore,
    KeyWrapper,
    StoredToken,
    TokenStore,
    UnpairedOutcome,
    names_intent,
)
from vault_service.service.rotation_status import KeyStatus, RotationStatus, why_not_retire

log = logging.getLogger(__name__)

COMPACTION_WAIT_SECONDS = 30.0
"""How long `reindex` waits for rows other transactions hold locked before it fails, naming how many are left."""
COMPACTION_RETRY_SECONDS = 0.2
"""Between two compaction passes over rows left (each pass counts what is left, by an index)."""
ROWS_LEFT_COUNTED = 10_000
"""Rows left after compaction are counted up to this many ("10000 or more")."""
SET_ASIDE_LIMIT = 1000
"""`reencrypt` sets aside up to this many rows that do not open under their key; one more stops it (`failed:`)."""
NOT_OPENING_REMEDY = (
    "investigate who wrote them (their issue audit rows name the session), then, as the database owner,"
    ' delete them (docs/key-rotation.md, "does not open under its data key") and run the job again'
)
"""What the operator does about stored values that do not open (review 28, F2); no token or value in it."""

Progress = Callable[[str, int], None]
"""Called with (phase, rows done in this batch) after every batch."""


BeforeBatch = Callable[[str], None]
"""Called with the phase before every batch (the first too) but compaction's; what it raises stops the job
(recorded as its outcome): a key job called off moves no further batch (attack 26, F3)."""


def _no_progress(phase: str, done: int) -> None:
    return None


def _go_on(phase: str) -> None:
    return None


def _no_check() -> None:
    return None


class KeyRotation:
    """The administrative key operations, each audited under the acting person's name."""

    def __init__(
        self,
        keys: KeyManager,
        key_store: KeyStore,
        wrapper: KeyWrapper,
        tokens: TokenStore,
        audit: AuditLog,
        actor: str | Caller,
        before_work: Callable[[], None] = _no_check,
        liveness: JobLiveness | None = None,
    ) -> None:
        """`before_work()` runs after each step's intent row, before its work; what it raises stops the step.

        `liveness`: each step holds its intent row while it runs and first gives every interrupted step
        (an intent row whose process is gone) its `failed: interrupted` outcome row (attack 26, F5); the
        caller releases the holds after the last outcome row (`JobLiveness.release`).

        `actor`: the operator's name (a Vault identity, for the admin commands), or the verified client
        certificate that asked the service to run the job (KeyJobs): its rows then carry its serial and SHA-256.
        """
        self._caller = Caller.of(actor) or Caller("")
        actor = self._caller.name
        self._keys = keys
        self._key_store = key_store
        self._wrapper = wrapper
        self._tokens = tokens
        self._audit = audit
        self._actor = actor
        self._before_work = before_work
        self._liveness = liveness
        self._live_keys: frozenset[int] | None = None  # ids of keys not retired, read once per job when needed
        self._intent_id: int | None = None  # the id of the running step's intent row, once written

    def _record(self, action: str, outcome: str, count: int, purpose: str) -> None:
        """One row of the job. An outcome row written once the job's hold is gone says so (review 32, F4).

        Every outcome row ends naming the step's intent row (`names_intent`): it pairs with that row and no
        other, whatever rows someone else appended between them (review 33, R33-5).
        """
        caller = self._caller
        intent = outcome in (INTENT_HELD, INTENT_UNHELD)
        if not intent:
            if self._liveness is not None and not self._still_holds():
                outcome += HOLD_LOST_NOTE
            outcome = names_intent(outcome, self._intent_id)
        row = self._audit.append(
            AuditEvent(caller.name, action, outcome, count, purpose, "", caller.serial, caller.cert_sha256)
        )
        if intent:
            self._intent_id = row

    def _still_holds(self) -> bool:
        """Whether every hold of the job is there (its session was not ended): no observer could close it."""
        assert self._liveness is not None
        try:
            self._liveness.check()
        except VaultError:
            return False
        return True

    def _start(self, action: str, purpose: str) -> None:
        """The intent row of `action` under the ticket `purpose`, then the check that lets the work start.

        InvalidRequest, before any row or work, when the audit log may not keep `purpose` (admin_reason):
        every caller is held to it, not only the command line (review 23, R23-8).

        With liveness: every interrupted operation is closed first; the hold is taken (refused, on the
        record with a `refused:` row that joins no job's rows, when its lock is held by someone else: review
        32, F3) and the intent row says INTENT_HELD (every outcome row of the step names it: review 33,
        R33-5); after `before_work` the hold is checked, and a job whose hold is gone stops with its own
        `failed:` outcome before any work (F4).
        """
        self._intent_id = None
        check_reason(purpose)
        if self._liveness is None:
            self._record(action, INTENT_UNHELD, 0, purpose)
            self._before_work()
            return
        self.close_interrupted()
        caller = self._caller
        try:
            self._liveness.hold(action, caller.name, caller.serial, purpose)
        except VaultError as error:
            with contextlib.suppress(VaultError):  # no intent row yet, so it names none; ticket '': joins no job
                self._audit.append(
                    AuditEvent(caller.name, action, f"refused: {error}", 0, "", "", caller.serial, caller.cert_sha256)
                )
            raise
        self._record(action, INTENT_HELD, 0, purpose)
        self._before_work()
        try:
            self._liveness.check()
        except VaultError as error:
            self._record_failure(action, error, 0, purpose)
            raise

    def interrupted(self) -> list[InterruptedJob]:
        """The key operations whose process ended between their intent row and their outcome (none without liveness)."""
        return [] if self._liveness is None else self._liveness.interrupted()

    def unpaired_outcomes(self) -> list[UnpairedOutcome]:
        """The key operations' outcome rows that name an intent row they cannot pair with (none without liveness)."""
        return [] if self._liveness is None else self._liveness.unpaired_outcomes()

    def close_interrupted(self) -> int:
        """Append the outcome row `failed: interrupted, the process ended` of every interrupted operation; how many.

        Each is claimed first (no process can take its hold meanwhile, and it is looked at again under
        it), so two vaults closing the same one append one row. The row names the intent row's client,
        serial, certificate digest, action and ticket, as its own outcome row would have; its text says
        who noticed. Appended, never an UPDATE: the intent row stays as written.
        """
        if self._liveness is None:
            return 0
        closed = 0
        for job in self._liveness.interrupted():
            with self._liveness.claimed(job) as still_open:
                if not still_open:
                    continue
                outcome = (
                    f"{CLOSING_PREFIX}{job.intent_id} has no outcome and no live holder; noticed by"
                    f" {self._noticed_by()}); run it again: a reencrypt or reindex resumes"
                )
                event = AuditEvent(
                    job.client, job.action, outcome, 0, job.purpose, "", job.client_serial, job.client_cert_sha256
                )
                self._audit.append(event)
                closed += 1
                log.warning(
                    "key operation %s (audit row %d) was interrupted: outcome written", job.action, job.intent_id
                )
        return closed

    def _noticed_by(self) -> str:
        """Who closed an interrupted operation, as its row says it: the name and certificate serial (review 32, F11)."""
        caller = self._caller
        return f"{caller.name!r}" + (f" (serial {caller.serial})" if caller.serial else "")

    def _still_held(self, before_batch: BeforeBatch) -> BeforeBatch:
        """`before_batch`, after checking that the job's hold is still there (a job never runs unheld)."""
        liveness = self._liveness
        if liveness is None:
            return before_batch

        def checked(phase: str) -> None:
            liveness.check()
            before_batch(phase)

        return checked

    def status(self) -> RotationStatus:
        """KEK version, data keys, the work left, and the key operations interrupted (their process ended)."""
        ring = self._keys.refresh()
        generation = ring.generation
        # To re-index: rows without a next fingerprint under the pending key; to compact: every fingerprint
        # not under the newest key (chaos 50, V50-5: the re-index's count was the latter).
        left = self._tokens.work_left(
            generation.encryption_id, generation.fingerprint_id, generation.pending_fingerprint_id
        )
        keys = self._key_statuses()
        kek = self._wrapper.kek_versions()
        return RotationStatus(
            kek.latest,
            keys,
            left["reencrypt"],
            left["reindex"],
            kek.min_decryption,
            kek.min_encryption,
            tuple(self.interrupted()),
            tuple(self.unpaired_outcomes()),
            left["compact"],
        )

    def _key_statuses(self) -> list[KeyStatus]:
        """Every data key as stored: its purpose, state and the KEK version wrapping it."""
        return [KeyStatus(k.key_id, k.purpose, k.state, k.kek_version) for k in self._key_store.load_keys()]

    def rewrap(self, purpose: str) -> int:
        """Rewrap every live data key under the newest KEK version."""
        self._start("rewrap", purpose)
        try:
            count = self._keys.rewrap_outdated()
        except Exception as error:  # e.g. Transit unreachable: the intent row gets its outcome (review 32, F8)
            self._record_failure("rewrap", error, 0, purpose)
            raise
        self._record("rewrap", f"ok: {count} data keys rewrapped", count, purpose)
        return count

    def retire_kek_versions(self, below: int, purpose: str, kek: KekConfig) -> int:
        """Raise the KEK's min_decryption_version (and min_encryption_version) to `below`; the version set.

        Refused (KekVersionsInUse, Transit untouched, a `refused:` outcome row) while a data key
        that may still be loaded is wrapped under an older version - it would no longer unwrap:
        replicas could not rewrap it and a restarted one could not start - or when `below` is past
        the latest version or under the present min_decryption_version. Both settings go in one
        write with the operator's own token (`kek`); min_encryption_version never goes down.
        Refused too while a retired DEK those versions wrap keeps copies of re-sealed values that
        differ from the values stored now, or cannot be checked (service/kept_copies.py; R25-1).
        """
        action = "retire-kek-versions"
        self._start(action, purpose)
        try:
            versions = kek.versions()
            refusal = why_not_retire(below, self._key_statuses(), versions, kek.name) or retired_keys_refusal(
                below, versions.min_decryption, self._key_store, self._keys, self._tokens
            )
            if refusal is None:
                kek.set_minimums(below, max(below, versions.min_encryption))
        except VaultError as error:
            self._record_failure(action, error, 0, purpose)
            raise
        if refusal is None:
            outcome = f"ok: KEK {kek.name} versions below v{below} retired (latest v{versions.latest})"
            self._record(action, outcome, 0, purpose)
            return below
        with contextlib.suppress(VaultError):
            self._record(action, f"refused: {refusal}", 0, purpose)
        raise KekVersionsInUse(f"{refusal}; nothing was changed in Transit")

    def rotate_encryption_key(self, purpose: str) -> int:
        """A new active DEK (the old one becomes decrypt_only); its id."""
        self._start("rotate-encryption-key", purpose)
        try:
            stored = self._key_store.add_key(ENCRYPTION, *self._keys.new_key())
        except Exception as error:  # e.g. a key row locked by another session: the intent row gets its outcome
            self._record_failure("rotate-encryption-key", error, 0, purpose)
            raise
        self._keys.refresh()
        self._record("rotate-encryption-key", f"ok: data key {stored.key_id} active", 1, purpose)
        return stored.key_id

    def reencrypt(
        self,
        purpose: str,
        batch_size: int = 1000,
        progress: Progress = _no_progress,
        before_batch: BeforeBatch = _go_on,
    ) -> int:
        """Move every stored value to the active DEK, then retire unused DEKs; rows moved.

        Before a DEK is retired, every value re-sealed away from it is checked against the copy kept
        under it (service/kept_copies.py): on a difference no key is retired, the outcome row says
        `refused:` with the count, and KeptCopiesDiffer stops the job (review 25, R25-1).

        A row whose value does not open under its own data key (garbage the vault never sealed: the
        serving role can insert such a row; review 28, F2) is set aside, not re-sealed: every other
        value is moved and every key left unused is retired, but that row's key stays `decrypt_only`
        (nothing that opens is lost); the outcome row says `refused:` with the count per key and the
        remedy, and StoredValueAltered stops the job. Past SET_ASIDE_LIMIT such rows it stops at once.
        A row under a RETIRED (or unknown) data key is set aside the same way (review 29, F2: planted
        before migration 0036, which refuses it now); it no longer stops the whole job with KeysUnavailable.
        Whatever stops the job, its intent row gets a `failed:` outcome (review 27, R27-2).
        """
        _check_batch_size(batch_size)
        self._start("reencrypt", purpose)
        before_batch = self._still_held(before_batch)
        total = 0
        set_aside: dict[str, int] = {}  # token -> its data key: kept in memory only, never written or said
        self._live_keys = None
        refusal: VaultError | None = None  # a refusal whose outcome row is written already
        try:
            while True:
                before_batch("reencrypt")
                dek = self._keys.refresh().active_encryption_key
                reseal = partial(self._reseal, dek, set_aside)
                aside_before = len(set_aside)
                done = self._tokens.reseal_batch(dek.key_id, batch_size, reseal, self._actor, tuple(set_aside))
                if not done:
                    break
                total += done - (len(set_aside) - aside_before)  # rows moved: a row set aside is read, not moved
                progress("reencrypt", done)
            checked, differing = unused_keys_checked(
                self._key_store, self._keys, self._tokens, partial(progress, "check")
            )
            if differing:  # retiring the key would make the kept copies, the only good ones, unreadable
                refusal = self._refused("reencrypt", KeptCopiesDiffer(not_retired_message(differing)), total, purpose)
                raise refusal
            retired = self._key_store.retire_unused_encryption_keys(checked)
            self._keys.refresh()
            if set_aside:  # every other value moved; the keys of the rows set aside stay decrypt_only
                message = _set_aside_message(set_aside, total, retired)
                refusal = self._refused("reencrypt", StoredValueAltered(message), total, purpose)
                raise refusal
        except Exception as error:  # the intent row gets its outcome (review 26, R26-3; review 27, R27-2; F2)
            if error is not refusal:
                self._record_failure("reencrypt", error, total, purpose)
            raise
        self._record("reencrypt", f"ok: {total} values moved, data keys retired: {retired or 'none'}", total, purpose)
        return total

    def _refused(self, action: str, refusal: VaultError, count: int, purpose: str) -> VaultError:
        """`refusal`, once its `refused:` outcome row is written (or could not be: the refusal is what matters)."""
        with contextlib.suppress(VaultError):
            self._record(action, f"refused: {refusal}", count, purpose)
        return refusal

    def rotate_fingerprint_key(self, purpose: str) -> int:
        """A new pending fingerprint key; the re-index makes it active. Its id."""
        self._start("rotate-fingerprint-key", purpose)
        try:
            stored = self._key_store.add_key(FINGERPRINT, *self._keys.new_key())
        except ValueError as error:  # a fingerprint key is pending: its outcome row says so
            raise self._refused("rotate-fingerprint-key", RotationUnderWay(str(error)), 0, purpose) from None
        except Exception as error:  # e.g. the key lock held by another session (attack 27, F5)
            self._record_failure("rotate-fingerprint-key", error, 0, purpose)
            raise
        self._keys.refresh()
        self._record("rotate-fingerprint-key", f"ok: fingerprint key {stored.key_id} pending", 1, purpose)
        return stored.key_id

    def reindex(
        self,
        purpose: str,
        batch_size: int = 1000,
        progress: Progress = _no_progress,
        before_batch: BeforeBatch = _go_on,
    ) -> int:
        """Fingerprint every live value under the pending key, make it active, compact; rows done.

        A row whose value does not open under its data key, or whose data key is retired or does not exist
        (a row no vault wrote: the serving role can insert one; attack 27, F6), is set aside as `reencrypt`
        sets it aside: every other value is fingerprinted under the pending key, up to SET_ASIDE_LIMIT such
        rows (one more stops the job at once). The pending key is then NOT promoted: the database promotes it
        only once every live row has a fingerprint under it (migration 0028's lifecycle check), and a row set
        aside has none. So the old fingerprint key stays active, nothing is lost and no value gets a second
        token; the outcome row says `refused:` with the count per data key, the listing query and the remedy
        (never a token), and StoredValueAltered stops the job. The next fingerprints are verified first: one
        planted on a row that does not open is cleared there (NextFingerprintsAltered), and the next run sets
        that row aside as well. Once the owner has deleted those rows, the next
        run finds the work done, verifies, promotes and compacts (compaction never meets them: they are gone).
        """
        _check_batch_size(batch_size)
        self._start("reindex", purpose)
        before_batch = self._still_held(before_batch)
        total = 0
        set_aside: dict[str, int] = {}  # token -> its data key: kept in memory only, never written or said
        self._live_keys = None
        refusal: VaultError | None = None  # a refusal whose outcome row is written already
        try:
            while (pending := self._keys.refresh().pending_fingerprint_key) is not None:
                before_batch("reindex")
                aside_before = len(set_aside)
                refingerprint = partial(self._refingerprint_or_set_aside, pending, set_aside)
                done = self._tokens.reindex_batch(
                    pending.key_id, batch_size, refingerprint, self._actor, tuple(set_aside)
                )
                total += done - (len(set_aside) - aside_before)  # a row set aside is read, not fingerprinted
                if done:
                    progress("reindex", done)
                    continue
                # Verified first: a next fingerprint planted on a row that does not open is cleared there, so
                # the next run sets that row aside too and its refusal lists every such row.
                self._verify_next_fingerprints(pending, batch_size, (progress, before_batch), total, purpose)
                if set_aside:  # the database would refuse the promotion: every other row is done
                    message = _reindex_set_aside_message(set_aside, total, pending.key_id)
                    refusal = self._refused("reindex", StoredValueAltered(message), total, purpose)
                    raise refusal
                if self._key_store.promote_pending_fingerprint_key():
                    log.info("fingerprint key promoted", extra={"key_id": pending.key_id})
                else:
                    time.sleep(0.05)  # rows still held by writers that started before the rotation
        except NextFingerprintsAltered:  # its refusal is on record already
            raise
        except Exception as error:  # e.g. a key row locked: the intent row gets its outcome (R27-2, F2; attack 27)
            if error is not refusal:
                self._record_failure("reindex", error, total, purpose)
            raise
        try:
            active = self._keys.refresh().generation.fingerprint_id
            self._compact(active, batch_size, progress)
        except StorageError as unfinished:  # the job's outcome is on record, not only its intent
            with contextlib.suppress(VaultError):  # what stopped the job is what the operator sees
                self._record("reindex", f"unfinished: {unfinished}", total, purpose)
            raise
        except Exception as error:  # anything else that stops it: a `failed:` outcome (review 28, F2)
            self._record_failure("reindex", error, total, purpose)
            raise
        self._record("reindex", f"ok: {total} values re-fingerprinted, key {active} active", total, purpose)
        return total

    def _record_failure(self, action: str, error: Exception, count: int, purpose: str) -> None:
        """The outcome row of a job `error` stopped; what stopped it is what the operator sees, even if this fails.

        A VaultError's message is written (they name counts, types and keys, never a value or token);
        anything else only by its class: a bug, or a driver error not translated, whose text could
        quote a row (review 28, F2).
        """
        cause = str(error) if isinstance(error, VaultError) else _unexpected(error)
        with contextlib.suppress(VaultError):
            self._record(action, f"failed: {cause}", count, purpose)

    def _verify_next_fingerprints(
        self, pending: DataKey, batch_size: int, reporting: tuple[Progress, BeforeBatch], total: int, purpose: str
    ) -> None:
        """Recompute every next fingerprint under the pending key before it is promoted; refuse if one differs.

        During a rotation the serving role can still write next fingerprints with
        set_next_fingerprints for rows the re-index has not reached, and the re-index skips a row
        whose next fingerprint is under the pending key: compaction would install garbage, and
        every such value would get a second token (review 23, R23-1). The database cannot check
        a keyed hash; the re-index holds the key. A row whose next fingerprint differs from its
        value's is cleared (only if it still holds those bytes), the key is not promoted, the
        outcome row counts the rows (never values), and NextFingerprintsAltered stops the job:
        its next run recomputes the cleared rows (a re-plant is caught again here).
        """
        progress, before_batch = reporting
        after_id, wrong = 0, 0
        while True:
            before_batch("verify")
            after_id, rows = self._tokens.pending_fingerprints_batch(pending.key_id, after_id, batch_size)
            if not rows:
                break
            # A row that does not open (or under a retired or unknown key) has no fingerprint the re-index could
            # have written: its next fingerprint is cleared as one it did not write (attack 27, F6), and the next
            # run sets the row aside.
            unopened: dict[str, int] = {}
            computed = dict(self._refingerprint_or_set_aside(pending, unopened, [row for row, _ in rows]))
            found = [(row.token, stored) for row, stored in rows if computed.get(row.token) != stored]
            if found:
                wrong += len(found)
                self._tokens.clear_next_fingerprints(found, self._actor)
            progress("verify", len(rows))
        if wrong:
            message = (
                f"{wrong} next fingerprint(s) under pending key {pending.key_id} were not written by the"
                " re-index (tampering suspected: see the audit log's set_next_fingerprints rows by session);"
                " the key was not promoted and those rows were cleared: run reindex again to recompute them"
            )
            with contextlib.suppress(VaultError):  # the refusal is what the operator must see
                self._record("reindex", f"refused: {message}", total, purpose)
            raise NextFingerprintsAltered(message)

    def _compact(self, active: int, batch_size: int, progress: Progress) -> None:
        """Move every re-indexed fingerprint into place; StorageError if rows stay behind (locked) past the wait.

        Compaction skips rows another transaction holds locked (SKIP LOCKED): ending at its first
        empty batch left such a row with its fingerprint under the retired key, and `reindex` said
        "ok"; the next rotation could then give its value a second token (attack 24, F3). It goes
        on until no row is left, for up to COMPACTION_WAIT_SECONDS; then fails, naming how many
        (`reindex` again compacts them: it resumes). Each pass counts what is left by the
        fingerprint-key index, up to ROWS_LEFT_COUNTED rows, not by a scan of vault.tokens.
        """
        deadline = time.monotonic() + COMPACTION_WAIT_SECONDS
        while True:
            while done := self._tokens.compact_batch(active, batch_size, self._actor):
                progress("compact", done)
            left = self._tokens.fingerprints_left(active, ROWS_LEFT_COUNTED)
            if not left:
                return
            if time.monotonic() >= deadline:
                count = f"{left} or more" if left >= ROWS_LEFT_COUNTED else str(left)
                raise StorageError(
                    f"{count} value(s) still have their fingerprint under a retired key after"
                    f" {COMPACTION_WAIT_SECONDS:.0f} s: rows held locked by another transaction (run reindex again),"
                    " or rows with no re-indexed fingerprint to move (a row restored or edited by the database"
                    " owner: if a re-run ends the same, run rotate-fingerprint-key and reindex, and read the"
                    " audit log's rows for those tokens)"
                )
            time.sleep(COMPACTION_RETRY_SECONDS)

    def _open(self, row: StoredToken) -> tuple[TokenType, str]:
        """The row's type and value; StoredValueAltered (naming its type and key, not its token) if it does not open."""
        token_type = TokenType.from_name(row.token_type)
        if row.sealed is None:
            raise InvalidRequest(f"token row {row.token[:3]}… has no stored value")
        try:
            return token_type, open_sealed(self._keys.key(row.dek_id), token_type, row.token, row.sealed)
        except SealBroken:
            raise StoredValueAltered(
                f"a stored {token_type.type_name} value does not open under its data key {row.dek_id}: a row the"
                f" vault did not write (inserted with the serving role's credentials, or altered); {NOT_OPENING_REMEDY}"
            ) from None

    def _open_or_set_aside(
        self, row: StoredToken, set_aside: dict[str, int], too_many: Callable[[dict[str, int]], str]
    ) -> tuple[TokenType, str] | None:
        """The row's type and value; None once set aside (it does not open, or its key is retired or unknown).

        Past SET_ASIDE_LIMIT rows set aside, StoredValueAltered saying `too_many(set_aside)`; a live key not
        loaded (Vault, a rewrap) raises KeysUnavailable: the job fails and is run again.
        """
        try:
            return self._open(row)
        except (StoredValueAltered, KeysUnavailable) as error:
            if isinstance(error, KeysUnavailable) and row.dek_id in self._not_retired():
                raise
            if len(set_aside) >= SET_ASIDE_LIMIT:
                raise StoredValueAltered(too_many(set_aside)) from None
            set_aside[row.token] = row.dek_id
            return None

    def _reseal(
        self, dek: DataKey, set_aside: dict[str, int], rows: Sequence[StoredToken]
    ) -> list[tuple[str, int, bytes]]:
        """Each row sealed under `dek`; a row that does not open goes into `set_aside` (up to SET_ASIDE_LIMIT)."""
        out = []
        for row in rows:
            if (opened := self._open_or_set_aside(row, set_aside, _too_many_set_aside_message)) is not None:
                token_type, value = opened
                out.append((row.token, dek.key_id, seal(dek, token_type, row.token, value)))
        return out

    def _refingerprint_or_set_aside(
        self, key: DataKey, set_aside: dict[str, int], rows: Sequence[StoredToken]
    ) -> list[tuple[str, bytes]]:
        """Each row's fingerprint under `key`; a row that does not open goes into `set_aside` (as `_reseal`)."""
        out = []
        for row in rows:
            if (opened := self._open_or_set_aside(row, set_aside, _reindex_too_many_message)) is not None:
                token_type, value = opened
                out.append((row.token, fingerprint(key, token_type, value)))
        return out

    def _not_retired(self) -> frozenset[int]:
        """The ids of data keys that exist and are not retired (read once per job, at the first key not loaded)."""
        if self._live_keys is None:
            self._live_keys = frozenset(k.key_id for k in self._key_store.load_keys() if k.state != KeyState.RETIRED)
        return self._live_keys


def _counts_per_key(set_aside: dict[str, int]) -> tuple[str, str]:
    """The rows set aside as 'N under data key K, ...' and the keys as 'K, ...' (never a token)."""
    per_key = Counter(set_aside.values())
    counts = ", ".join(f"{count} under data key {key}" for key, count in sorted(per_key.items()))
    return counts, ", ".join(str(key) for key in sorted(per_key))


def _set_aside_message(set_aside: dict[str, int], moved: int, retired: list[int]) -> str:
    """What `reencrypt` says of the rows it set aside: counts per data key and the remedy, never a token."""
    counts, keys = _counts_per_key(set_aside)
    return (
        f"{len(set_aside)} stored value(s) do not open under their data key ({counts}) and were set aside:"
        f" rows the vault did not write (inserted with the serving role's credentials, or altered)."
        f" Every other value was moved ({moved}); data keys retired: {retired or 'none'}; data key(s) {keys}"
        f" stay as they are (a decrypt_only key is not retired; a row under a retired key is one no vault"
        f" wrote: migration 0036 refuses it) while those rows are there (the rows still under them are exactly those:"
        f" SELECT id, token_type FROM vault.tokens WHERE dek_id IN ({keys}) AND sealed IS NOT NULL);"
        f" {NOT_OPENING_REMEDY}"
    )


def _too_many_set_aside_message(set_aside: dict[str, int]) -> str:
    """Why `reencrypt` stopped past SET_ASIDE_LIMIT: counts per data key, the listing query, the remedy; no token."""
    counts, keys = _counts_per_key(set_aside)
    return (
        f"more than {SET_ASIDE_LIMIT} stored values do not open under their data key (the first {len(set_aside)}:"
        f" {counts}): rows the vault did not write (inserted with the serving role's credentials, or altered)."
        f" The job stopped at once: the values it moved stay moved, data key(s) {keys} stay decrypt_only. The rows"
        f" still under them are those and any good value the job had not reached yet, so delete only the rows the"
        f" investigation finds planted: SELECT id, token_type FROM vault.tokens WHERE dek_id IN ({keys}) AND sealed"
        f" IS NOT NULL; {NOT_OPENING_REMEDY}"
    )


def _reindex_set_aside_message(set_aside: dict[str, int], done: int, pending: int) -> str:
    """What `reindex` says of the rows it set aside: counts per data key, the listing query, the remedy; no token."""
    counts, _ = _counts_per_key(set_aside)
    return (
        f"{len(set_aside)} stored value(s) do not open under their data key ({counts}; a retired or unknown data"
        " key opens nothing) and were set aside: rows the vault did not write (inserted with the serving role's"
        f" credentials, or altered). Every other value was fingerprinted under pending key {pending} ({done} in this"
        f" run); key {pending} was not promoted (the database promotes it only once every live value has a"
        " fingerprint under it; those rows have none), so the active fingerprint key stays active and nothing is"
        " lost. The rows still without one are exactly those: SELECT id, token_type, dek_id FROM vault.tokens WHERE"
        f" fingerprint IS NOT NULL AND fingerprint_key_id <> {pending} AND (next_fingerprint IS NULL OR"
        f" next_fingerprint_key_id IS DISTINCT FROM {pending}); {NOT_OPENING_REMEDY}"
    )


def _reindex_too_many_message(set_aside: dict[str, int]) -> str:
    """Why `reindex` stopped past SET_ASIDE_LIMIT: counts per data key and the remedy; no token."""
    counts, _ = _counts_per_key(set_aside)
    return (
        f"more than {SET_ASIDE_LIMIT} stored values do not open under their data key (the first {len(set_aside)}:"
        f" {counts}): rows the vault did not write (inserted with the serving role's credentials, or altered)."
        " The job stopped at once: the fingerprints it wrote stay, no key was promoted. The rows without a"
        " fingerprint under the pending key are those and any good value the job had not reached yet, so delete"
        f" only the rows the investigation finds planted; {NOT_OPENING_REMEDY}"
    )


def _unexpected(error: Exception) -> str:
    """A job's outcome for an error that is not a VaultError: its class, where to look, and what to do."""
    return (
        f"{type(error).__name__} (not a refusal the job knows: a bug, or an error the adapters do not translate;"
        " its text is not recorded, it may quote a row); run the job again once the cause is fixed: it resumes"
    )


def _check_batch_size(batch_size: int) -> None:
    """InvalidRequest, before anything is done, for a batch size under 1 (review 26, R26-2: 0 moved nothing)."""
    if batch_size < 1:
        raise InvalidRequest(f"the batch size is a number of rows from 1 up, not {batch_size}")
