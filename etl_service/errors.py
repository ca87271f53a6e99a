"""Errors by kind: what the ETL does about a failure depends on its kind, never on its text.

- `DependencyDown`: SQS, the vault service or Postgres cannot be reached or is overloaded.
  The batch is postponed through visibility (nothing deleted) and receiving pauses until a
  probe passes (the DependencyGate). On a message's last receive before the redrive limit the
  ETL dead-letters it itself, sealed, as `dependency_unavailable` (never left for SQS's redrive
  to move in clear).
- `Throttled` (a DependencyDown): the vault metered the ETL's identity (RESOURCE_EXHAUSTED) and
  said when to come back (`retry-after-ms`). The vault is up - its health check passes - so the
  gate stays closed until that time has passed, and the batch's new visibility is at least as long.
- `Misconfigured`: retrying cannot help - an identity or permission refused by the vault,
  Postgres or SQS, wrong credentials, a missing queue, table or privilege. The ETL stops
  receiving, releases what it holds (visibility 0, so no receive is wasted and no good message
  moves toward the DLQ; one on its last receive is dead-lettered sealed as `released_on_last_receive`
  instead) and exits non-zero, naming the problem.
- A bad message (`etl_service.domain.validation.Rejection`): quarantined with its reason.
- Anything else is a bug: the message is isolated (its batch retried one message at a time);
  if it still fails on its last receive before the redrive limit, the ETL quarantines it itself
  as `processing_failed` with the error's class.

The class is the kind: callers catch DependencyDown, Misconfigured or Rejection and treat
anything else as a bug. Adapters turn driver errors into these; the classification of the
vault's gRPC status codes lives here (`vault_status_error`) so every caller decides alike.
"""

from __future__ import annotations


class EtlError(Exception):
    """Base of the ETL's own errors; `dependency` names the component ("sqs", "vault", "database").

    An EtlError that is neither of the two kinds below is a bug (e.g. VaultCallFailed).
    """

    nothing_stored = False
    """A failed Tokenize the vault said stored no value and issued no token (its `tokenvault-nothing-stored`
    trailer, tokenvault_client's VaultClientError.nothing_stored): no answer of it was lost. False claims nothing.
    For the database: no connection was had (PoolTimeout) or the server refused the write (read-only), so no
    COMMIT of it can have committed (postgres.database_error; review 49, R49-4)."""

    def __init__(self, message: str, dependency: str = "unknown") -> None:
        super().__init__(message)
        self.dependency = dependency


class DependencyDown(EtlError):
    """A dependency is unavailable; the batch is retried later and nothing is deleted."""


class Throttled(DependencyDown):
    """The vault refused a call over the ETL's quota; `retry_after` seconds is when it may be tried again.

    The vault answers its health check meanwhile, so a probe cannot tell when this is over: the wait is
    the vault's own figure (MIN_THROTTLED_SECONDS when it gave none), but never more than
    MAX_THROTTLED_SECONDS: the figure comes from a function the database owner can replace, and an
    unbounded one paused receiving for as long as it said, long after the vault was serving again
    (attack 20, finding 4). Past the cap the ETL simply tries again and is told again.
    """

    def __init__(self, message: str, retry_after: float, dependency: str = "vault") -> None:
        super().__init__(message, dependency)
        self.retry_after = min(retry_after, MAX_THROTTLED_SECONDS) if retry_after > 0 else MIN_THROTTLED_SECONDS


class TokenizeOutcomeUnknown(DependencyDown):
    """A Tokenize on a message's last receive whose outcome is unknown, retried in vain (service/batch.py).

    The vault may have stored the values under tokens the ETL never got (a reply lost after its commit:
    attack 41, A41-4); the message is dead-lettered saying so (outcomes.TOKENIZE_OUTCOME_UNKNOWN).
    `fatal`: the retry ended in a refusal of the ETL (its identity or permission): the batch's letters say the
    outcome is unknown, and the ETL stops as for any misconfiguration.
    """

    def __init__(self, message: str, fatal: Misconfigured | None = None, retry_after: float = 0.0) -> None:
        super().__init__(message, "vault")
        self.fatal = fatal
        self.retry_after = retry_after
        """A metered refusal's (Throttled) wait: the batch's other messages are postponed at least as long."""


MIN_THROTTLED_SECONDS = 1.0
"""How long a metered refusal without a `retry-after-ms` keeps receiving paused."""
MAX_THROTTLED_SECONDS = 60.0
"""The longest a metered refusal keeps receiving paused, whatever `retry-after-ms` the vault sent."""


class Misconfigured(EtlError):
    """Retrying cannot help: stop, release what is held, exit non-zero with this message."""


# The vault's gRPC status codes by kind (names, so this module needs no grpc import).
_VAULT_DOWN = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "CANCELLED"})
_VAULT_THROTTLED = "RESOURCE_EXHAUSTED"
_VAULT_MISCONFIGURED = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "UNIMPLEMENTED", "FAILED_PRECONDITION"})
_HINTS = {
    "UNAUTHENTICATED": "the vault does not accept the ETL's certificate: expired, revoked, or a name it does not"
    " know (ETL_TLS_CERT; config/vault-policy.toml)",
    "PERMISSION_DENIED": "the ETL's identity may not tokenize ip and device_id (config/vault-policy.toml)",
    "UNIMPLEMENTED": "ETL_VAULT_ADDRESS does not point at a tokenvault vault service of this version",
}


def vault_status_error(
    code_name: str, detail: str, call: str, retry_after: float = 0.0, nothing_stored: bool = False
) -> EtlError:
    """The ETL error for a failed vault call with gRPC status `code_name` (`retry_after`: its `retry-after-ms`).

    INTERNAL and UNKNOWN count as bugs (the vault answers its own failures, such as an audit
    or a database outage, with UNAVAILABLE), so a message that triggers one is isolated.
    `nothing_stored`: the vault said the call stored nothing (EtlError.nothing_stored).
    """
    error = _vault_status_error(code_name, detail, call, retry_after)
    error.nothing_stored = nothing_stored
    return error


def _vault_status_error(code_name: str, detail: str, call: str, retry_after: float) -> EtlError:
    if code_name == _VAULT_THROTTLED:
        over = retry_after > MAX_THROTTLED_SECONDS
        capped = f" (the ETL tries again after {MAX_THROTTLED_SECONDS:.0f} s)" if over else ""
        return Throttled(f"vault service {call}: {code_name}: {detail}{capped}", retry_after)
    if code_name in _VAULT_DOWN:
        return DependencyDown(f"vault service {call}: {code_name}: {detail}", "vault")
    if code_name in _VAULT_MISCONFIGURED:
        hint = _HINTS.get(code_name, "check the vault service's address and version")
        return Misconfigured(f"vault service refused {call}: {code_name}: {detail} - {hint}", "vault")
    return VaultCallFailed(f"vault service {call} failed: {code_name}: {detail}", "vault")


class VaultCallFailed(EtlError):
    """The vault failed a call in a way neither an outage nor a refusal explains (treated as a bug)."""
