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
the log may not keep, a version below 1, or an operator token Vault refuses by `refused`
(throttled per peer). What the rotation itself refuses (KekVersionsInUse, KeptCopiesDiffer) is its
own `refused:` outcome row. These commands run beside a running key job, as the admin commands
did in their own processes.

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
from vault_service.domain.errors import InvalidRequest, PermissionDenied, StorageError, VaultError
from vault_service.domain.identity import Caller
from vault_service.service.key_jobs import Authorize, JobSession, Refused
from vault_service.service.ports import KekConfig
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


class KeyCommands:
    """Runs the short key commands the policy gives a client certificate, each in a session of its own."""

    def __init__(
        self,
        authorize: Authorize,
        session: JobSession,
        refused: Refused = _not_audited,
        operator_kek: OperatorKek = _no_operator_kek,
    ) -> None:
        """`authorize`, `session`, `refused`: the key jobs' (service/key_jobs.py); `operator_kek`: see OperatorKek."""
        self._authorize = authorize
        self._session = session
        self._refused = refused
        self._operator_kek = operator_kek

    def status(self, caller: Caller) -> RotationStatus:
        """The data keys, the KEK's versions and the work left; PermissionDenied (audited) unless allowed."""
        self._authorize(caller, STATUS)
        return self._in_session(caller, STATUS, KeyRotation.status)

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
            access = self._operator_kek(vault_token)
        except (InvalidRequest, PermissionDenied) as error:
            self._refused(caller, RETIRE_KEK_VERSIONS, error)
            raise
        both = Caller(f"{caller.name} with {access.actor}", caller.serial, caller.cert_sha256)
        done = self._in_session(
            both, RETIRE_KEK_VERSIONS, lambda rotation: rotation.retire_kek_versions(below, reason, access.kek)
        )
        return KekRetired(access.kek.name, done)

    def _allowed(self, caller: Caller, command: str, reason: str) -> None:
        """PermissionDenied unless the policy gives `caller` the command; InvalidRequest for an unfit reason."""
        self._authorize(caller, command)
        try:
            check_reason(reason)
        except InvalidRequest as error:  # on the record as every refusal (attack 26, F1)
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
