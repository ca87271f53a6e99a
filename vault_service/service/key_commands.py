"""The security team's short key commands, run by the vault service for a client certificate (KeyJobs' unary calls).

`status`, `rewrap`, `rotate-encryption-key`, `rotate-fingerprint-key` and `retire-kek-versions` open
no value, but run as admin commands they ran with the service's Vault login and database role, so
whoever ran the runbook held what the service holds and could decrypt every value outside the
audit (DESIGN §1b: the security team cannot decrypt). Here the running service does them with its
own credentials, each in a session of its own (the key jobs' `JobSession`: its own connections,
key ring and audit log; the intent row anchored in the audit chain before the work, a round over
its rows after), for a client certificate the policy gives the command (`key_jobs`); the rows name
that certificate (CN, serial, SHA-256) and keep the reason.

Every refusal is on the record, as the key jobs' are: PermissionDenied by `authorize`; a reason
the log may not keep, a version below 1, an operator token that is none (`check_vault_token`) or
one Vault refuses, or a call over the certificate's budget by `refused` (throttled per peer). What the
rotation itself refuses (KekVersionsInUse, KeptCopiesDiffer) is its own `refused:` outcome row.
These commands run beside a running key job, as the admin commands did in their own processes.

Each command is metered per certificate (CN and serial) - and per client, its certificates together at
CLIENT_CERTIFICATES times one's (attack 40, A40-2) - and vault process (`budget`, RateLimited) after
its checks, before it opens anything (attack 28, F7: 50 unmetered Status calls a second, each a session
of its own, slowed every other client's reveals tenfold). Reads and changes have budgets of their own
(review 33, R33-4: one shared bucket let `status` polling refuse the team's rotations): `status` spends
READS (the policy's key_status_per_second / _burst), the others CHANGES (key_commands_per_second /
_burst). `retire-kek-versions` spends CHANGES only once Vault has accepted the operator's token: before
the lookup it takes one from TOKEN_REFUSALS (key_token_refusals_per_second / _burst), given back once
Vault has accepted the token and CHANGES paid for the call, so well-formed bogus tokens spend that
budget alone and the lookups they cause stay bounded. `status` writes no intent row and runs in no
session: it is read on the serving stores (`read_status`, service/key_status.py) and leaves one
`status` row of its own (`ok: ...` counts).

`retire-kek-versions` writes the KEK's config in Transit, which the service's own Vault policy may
not do (least privilege): the caller sends its own Vault token, which `OperatorKek` looks up (it
must hold tokenvault-security) and writes with, after the service's checks. The token serves that
one call: it is never logged, stored, audited or echoed; the rows name the certificate and the
Vault identity both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from vault_service.domain.admin_reason import check_reason
from vault_service.domain.audit import AuditEvent
from vault_service.domain.errors import InvalidRequest, PermissionDenied, RateLimited, StorageError, VaultError
from vault_service.domain.identity import Caller
from vault_service.service.key_jobs import Authorize, JobSession, Refused
from vault_service.service.ports import AuditLog, KekConfig
from vault_service.service.rotation import KeyRotation
from vault_service.service.rotation_status import RotationStatus

log = logging.getLogger(__name__)

T = TypeVar("T")

# The short key commands, by the names the policy's `key_jobs` gives them (domain/policy.py KEY_JOBS).
STATUS = "status"
REWRAP = "rewrap"
ROTATE_ENCRYPTION_KEY = "rotate-encryption-key"
ROTATE_FINGERPRINT_KEY = "rotate-fingerprint-key"
RETIRE_KEK_VERSIONS = "retire-kek-versions"


READS = "key_status"
"""The budget `status` spends (the policy's key_status_per_second / _burst)."""
CHANGES = "key_commands"
"""The budget the changes spend: rewrap, rotate-*, retire-kek-versions (key_commands_per_second / _burst)."""
TOKEN_REFUSALS = "key_token_refusals"  # noqa: S105 - a budget's name, no credential
"""The budget of operator tokens Vault refused (key_token_refusals_per_second / _burst): one is taken before
Vault looks a token up and given back when Vault accepts it."""


MAX_VAULT_TOKEN_CHARACTERS = 4096
"""Longer than any token OpenBao or Vault issues (service tokens `s.`/`hvs.` ~30-100 characters, batch tokens
`b.`/`hvb.` a few hundred): a longer one is refused before Vault is asked."""
UNFIT_OPERATOR_CREDENTIAL = (
    "retire-kek-versions: the Vault token sent is not one (a Vault token is {what}; it is never shown): send the"
    " token `bao login` / `vault login` gave you, e.g. `bao print token`, whole and alone (VAULT_TOKEN, or"
    " VAULT_SECURITY_TOKEN_FILE holding the token only)"
)


def check_vault_token(token: str) -> None:
    """InvalidRequest unless `token` may be a Vault token: 1 to 4096 printable ASCII characters, no space.

    OpenBao's tokens (`s.`, `b.`, `r.` and a base62 body; Vault's `hvs.`, `hvb.`) and custom token ids are
    printable ASCII; anything else (a space, CR/LF, a control or non-ASCII character, megabytes) would
    only reach Vault as a malformed HTTP header or an encoding error (attack 28, F2). The message says what
    is wrong with the token, never the token.
    """
    if len(token) > MAX_VAULT_TOKEN_CHARACTERS:
        raise InvalidRequest(
            UNFIT_OPERATOR_CREDENTIAL.format(what=f"at most {MAX_VAULT_TOKEN_CHARACTERS} characters, not {len(token)}")
        )
    if not all("!" <= character <= "~" for character in token):
        raise InvalidRequest(
            UNFIT_OPERATOR_CREDENTIAL.format(
                what="printable ASCII without spaces; this one holds a space, a line break, a control or a non-ASCII"
                " character (a copy with its line end, or more than the token?)"
            )
        )


class OperatorAccess(NamedTuple):
    """What the operator's own Vault token gives one `retire-kek-versions` call."""

    actor: str
    """How Vault names the token's holder (`vault:NAME entity=... accessor=...`), never the token."""
    kek: KekConfig
    """The KEK's config, read and written with that token."""


OperatorKek = Callable[[str], OperatorAccess]
"""`operator_kek(token)`: the access of the operator's Vault token; PermissionDenied when Vault refuses it
(unknown, expired, without tokenvault-security), KeysUnavailable when Vault cannot be asked."""


class KekRetired(NamedTuple):
    """What `retire-kek-versions` did: the versions below `below` of KEK `kek_name` no longer decrypt."""

    kek_name: str
    below: int


def _no_operator_kek(token: str) -> OperatorAccess:
    raise PermissionDenied("this vault takes no operator Vault token: retire-kek-versions is not served here")


def _not_audited(caller: Caller, command: str, error: VaultError) -> None:
    """The default `refused` of unit tests: nothing recorded."""


def _unmetered(caller: Caller, budget: str) -> None:
    """The default `budget` and `give_back` of unit tests: no limit."""


Budget = Callable[[Caller, str], None]
"""`budget(caller, READS | CHANGES | TOKEN_REFUSALS)`: takes one from that budget of the caller's certificate;
RateLimited when it has none left. `give_back(caller, budget)`: puts one back."""
ReadStatus = Callable[[], RotationStatus]
"""`read_status()`: where key rotation stands, read without a key job's session (service/key_status.py)."""


class KeyCommands:
    """Runs the short key commands the policy gives a client certificate: the changes each in a session of its own."""

    def __init__(
        self,
        authorize: Authorize,
        session: JobSession,
        refused: Refused = _not_audited,
        operator_kek: OperatorKek = _no_operator_kek,
        *,
        read_status: ReadStatus,
        budget: Budget = _unmetered,
        give_back: Budget = _unmetered,
        audit: AuditLog | None = None,
    ) -> None:
        """`authorize`, `session`, `refused`: the key jobs' (service/key_jobs.py); `operator_kek`: see OperatorKek.

        `read_status`: `status`, read without a session (see ReadStatus). `budget`, `give_back`: see Budget.
        `audit`: where `status`'s own row goes (the service's audit log; None: none).
        """
        self._authorize = authorize
        self._session = session
        self._refused = refused
        self._operator_kek = operator_kek
        self._budget = budget
        self._give_back = give_back
        self._read_status = read_status
        self._audit = audit

    def status(self, caller: Caller) -> RotationStatus:
        """The data keys, the KEK's versions and the work left; PermissionDenied (audited) unless allowed.

        Metered (READS: a budget of its own, so polling it never refuses a change); its own `status` row
        (`ok: ...`, counts only) is appended before it answers; a status that
        could not be read is recorded as refused (throttled per peer), as every refusal.
        """
        self._authorize(caller, STATUS)
        self._metered(caller, STATUS, READS)
        try:
            status = self._read_status()
            if self._audit is not None:
                event = AuditEvent(
                    caller.name, STATUS, _status_outcome(status), 0, "", "", caller.serial, caller.cert_sha256
                )
                self._audit.append(event)
        except VaultError as error:
            log.warning("key command %s ended: %s: %s", STATUS, type(error).__name__, error)
            self._refused(caller, STATUS, error)
            raise
        except Exception as error:  # a bug, or a driver error not translated: its text could quote a row
            log.error("key command %s failed: %s", STATUS, type(error).__name__)
            failure = StorageError(f"{STATUS} failed ({type(error).__name__}; see the vault's log)")
            self._refused(caller, STATUS, failure)
            raise failure from None
        return status

    def rewrap(self, caller: Caller, reason: str) -> int:
        """Rewrap every live data key under the KEK's newest version; how many were."""
        self._allowed(caller, REWRAP, reason)
        return self._in_session(caller, REWRAP, lambda rotation: rotation.rewrap(reason))

    def rotate_encryption_key(self, caller: Caller, reason: str) -> int:
        """A new active data-encryption key; its id."""
        self._allowed(caller, ROTATE_ENCRYPTION_KEY, reason)
        return self._in_session(caller, ROTATE_ENCRYPTION_KEY, lambda rotation: rotation.rotate_encryption_key(reason))

    def rotate_fingerprint_key(self, caller: Caller, reason: str) -> int:
        """A new pending fingerprint key; its id. RotationUnderWay while one is pending."""
        self._allowed(caller, ROTATE_FINGERPRINT_KEY, reason)
        return self._in_session(
            caller, ROTATE_FINGERPRINT_KEY, lambda rotation: rotation.rotate_fingerprint_key(reason)
        )

    def retire_kek_versions(self, caller: Caller, below: int, reason: str, vault_token: str) -> KekRetired:
        """Raise the KEK's minimum versions to `below` with the operator's `vault_token`, after the service's checks.

        Refused (audited, nothing written) for a version below 1 or a token Vault refuses; KekVersionsInUse
        or KeptCopiesDiffer (the rotation's own `refused:` outcome row, Transit untouched) when not safe.
        The rows name `caller` and the token's Vault identity; the token itself goes nowhere else.
        """
        self._authorize(caller, RETIRE_KEK_VERSIONS)
        try:
            check_reason(reason)
            if below < 1:
                raise InvalidRequest(f"a KEK version is a whole number from 1 up, not {below}")
            if not vault_token:
                raise InvalidRequest(
                    "retire-kek-versions writes the KEK's config with your own Vault token: send it"
                    " (VAULT_TOKEN after `vault login` / `bao login`, or VAULT_SECURITY_TOKEN_FILE)"
                )
            check_vault_token(vault_token)
        except InvalidRequest as error:
            self._refused(caller, RETIRE_KEK_VERSIONS, error)
            raise
        # Vault is asked only while the certificate has refused tokens to spare; the changes' budget is
        # spent once Vault has accepted the token (review 33, R33-4: a bogus token spent it before).
        self._metered(caller, RETIRE_KEK_VERSIONS, TOKEN_REFUSALS)
        try:
            access = self._operator_kek(vault_token)
        except VaultError as error:  # refused, or Vault not reached: on the record either way
            self._refused(caller, RETIRE_KEK_VERSIONS, error)
            raise
        self._metered(caller, RETIRE_KEK_VERSIONS, CHANGES)  # refused: the token's lookup stays counted
        self._give_back(caller, TOKEN_REFUSALS)  # every lookup is counted in one budget or the other
        both = Caller(f"{caller.name} with {access.actor}", caller.serial, caller.cert_sha256)
        done = self._in_session(
            both, RETIRE_KEK_VERSIONS, lambda rotation: rotation.retire_kek_versions(below, reason, access.kek)
        )
        return KekRetired(access.kek.name, done)

    def _allowed(self, caller: Caller, command: str, reason: str) -> None:
        """PermissionDenied unless the policy gives `caller` the command; InvalidRequest for an unfit reason.

        Then one from the caller's CHANGES budget (RateLimited, on the record, when none is left).
        """
        self._authorize(caller, command)
        try:
            check_reason(reason)
        except InvalidRequest as error:  # on the record as every refusal (attack 26, F1)
            self._refused(caller, command, error)
            raise
        self._metered(caller, command, CHANGES)

    def _metered(self, caller: Caller, command: str, budget: str) -> None:
        """One from `caller`'s `budget`; RateLimited (audited, throttled per peer) when none is left."""
        try:
            self._budget(caller, budget)
        except RateLimited as error:
            self._refused(caller, command, error)
            raise

    def _in_session(self, caller: Caller, command: str, work: Callable[[KeyRotation], T]) -> T:
        """`work` on the key operations of a session audited as `caller`; a driver error said by class only."""
        try:
            with self._session(caller) as rotation:
                return work(rotation)
        except VaultError as error:
            log.warning("key command %s ended: %s: %s", command, type(error).__name__, error)
            raise
        except Exception as error:  # a bug, or a driver error not translated: its text could quote a row
            log.error("key command %s failed: %s", command, type(error).__name__)
            raise StorageError(f"{command} failed ({type(error).__name__}; see the vault's log)") from None


def _status_outcome(status: RotationStatus) -> str:
    """`status`'s row: what it answered, in counts (no key material, no row of the log)."""
    live = sum(1 for key in status.keys if key.counts)
    return (
        f"ok: {len(status.keys)} data keys ({live} loaded), KEK v{status.kek_latest_version} (min decryption"
        f" v{status.kek_min_decryption_version}), {status.rows_to_reencrypt} to re-encrypt,"
        f" {status.rows_to_reindex} to re-index, {len(status.interrupted)} interrupted"
        + (f", {len(status.unpaired_outcomes)} unpaired outcome rows" if status.unpaired_outcomes else "")
    )
