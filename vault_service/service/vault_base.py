"""What the vault's use cases share: their wiring (stores, keys, policy, limits, audit) and the audited refusal.

The use cases are built on it: Tokenize in tokenizing.py, Erase in erasing.py, Detokenize in vault.py
(`TokenVault`, the class callers use). Split out of vault.py as they were (review 17, #7; review 51, R51-9).
What Detokenize and Erase share, the purpose their audit row keeps (`_kept`), is here too.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Sequence

from vault_service.domain.audit import AuditEvent
from vault_service.domain.errors import InvalidRequest, PermissionDenied, RateLimited, Unauthenticated, VaultError
from vault_service.domain.identity import Caller
from vault_service.domain.policy import AUDIT_REPORT_ACTIONS, AccessPolicy
from vault_service.domain.purpose import WITHHELD_PURPOSE
from vault_service.domain.purpose_spans import every_group, with_groups_withheld
from vault_service.domain.rate_limit import CLIENT_CERTIFICATES, CertificateBuckets, RateLimiter, exact
from vault_service.domain.token_types import TokenType
from vault_service.service.erased_tokens import ErasedTokens, Hasher
from vault_service.service.keyring import KeyManager
from vault_service.service.metering import RefusalAuditor, TokenizeMeter
from vault_service.service.ports import AuditLog, TokenStore
from vault_service.service.revealing import RevealedCall, reveal_hasher
from vault_service.service.stored_values import StoredValueLookup
from vault_service.service.token_cache import TokenCache
from vault_service.service.withheld_purposes import WithheldPurposes, remembered_for

log = logging.getLogger(__name__)

_TOKEN_TYPES = tuple(TokenType)  # iterating the Enum class itself runs a Python generator

_KEY_COMMAND_BUDGETS = {
    "key_status": ("have this vault answer {burst} status call(s)", "key_status_per_second"),
    "key_commands": (
        "have this vault run {burst} key change(s) (rewrap, rotate-*, retire-kek-versions; status has a budget"
        " of its own)",
        "key_commands_per_second",
    ),
    "key_token_refusals": (
        "have {burst} Vault token(s) refused by Vault for retire-kek-versions (none is looked up past that)",
        "key_token_refusals_per_second",
    ),
}
"""The key commands' budgets (Limits' fields): what each meters, and its policy key."""


class TokenVaultBase:
    """The vault's stores, keys, policy, cache, meters and rate limits, and the audited refusal (see `TokenVault`)."""

    def __init__(
        self,
        tokens: TokenStore,
        keys: KeyManager,
        policy: AccessPolicy,
        audit: AuditLog,
        cache: TokenCache | None = None,
        meter: TokenizeMeter | None = None,
    ) -> None:
        self._tokens = tokens
        self._keys = keys
        self._policy = policy
        self._audit = audit
        self._cache = cache if cache is not None else TokenCache(0)
        self.meter = meter if meter is not None else TokenizeMeter()
        self.refusals = RefusalAuditor(audit)
        # The erased tokens' keyed hashes, kept out of vault.tokens (attack 43): fed by erase() and the upkeep.
        self.erased = ErasedTokens()
        self.stored_values = StoredValueLookup(tokens, keys)
        self.withheld_purposes = WithheldPurposes(ttl=remembered_for(policy))
        # Every limit's buckets are kept in the database, shared by every replica and kept across
        # restarts (the limits themselves come from the policy file). Reveals and tokenize spend
        # leases taken from them, a twentieth of the burst at a time; erasure, which cannot be
        # undone, takes exactly what each call needs.
        defaults, shared = policy.default_limits, tokens
        self._tokenize_limiter = RateLimiter(
            policy.limits_of("tokenize"), defaults.tokenize, "tokenize", shared=shared, kind="tokenize"
        )
        self._new_token_limiter = RateLimiter(
            policy.limits_of("new_tokens"),
            defaults.new_tokens,
            "create new tokens for",
            shared=shared,
            kind="new_tokens",
        )
        self._detokenize_limiter = RateLimiter(
            policy.limits_of("detokenize"), defaults.detokenize, "detokenize", shared=shared, kind="detokenize"
        )
        self._erase_limiter = RateLimiter(
            policy.limits_of("erase"), defaults.erase, "erase", shared=shared, kind="erase", lease=exact
        )
        # Audit reports read the whole log in this process: metered per process (the shared budgets'
        # table knows only the four kinds above), so N replicas make at most N times the policy's rate.
        self._audit_report_limiter = RateLimiter(
            policy.limits_of("audit_reports"), defaults.audit_reports, "ask for audit reports"
        )
        # KeyJobs' short commands likewise (attack 28, F7), per process, and per certificate (CN and serial):
        # reads (status), changes, and Vault tokens Vault refused, each a budget of its own (review 33, R33-4);
        # a client's certificates together get CLIENT_CERTIFICATES times one's (attack 40, A40-2).
        self._key_command_buckets = {
            kind: CertificateBuckets(policy.limits_of(kind), getattr(defaults, kind)) for kind in _KEY_COMMAND_BUDGETS
        }

    def _audit_hashers(self) -> list[Hasher]:
        """The keyed token hash under each loaded audit key (an erase row names its tokens under the key of its day)."""
        return [reveal_hasher(key) for key in self._keys.ring.audit_keys]

    @property
    def cache(self) -> TokenCache:
        """The token cache (for metrics and invalidation)."""
        return self._cache

    def check_client(self, client: str) -> None:
        """Raise Unauthenticated unless the access policy knows `client` (the guard asks before reading a call)."""
        self._policy.permissions(client)

    def authorize_key_job(self, caller: Caller, job: str) -> None:
        """Raise PermissionDenied (audited, as every refusal) unless the policy gives `caller` key job `job`."""
        try:
            self._policy.check_key_job(caller.name, job)
        except (PermissionDenied, InvalidRequest) as error:
            self._audit_refusal(caller, job, error, 0, "")
            raise

    def refuse_key_job(self, caller: Caller, job: str, error: VaultError) -> None:
        """Audit (throttled per peer) a key-job call refused after its authorization: malformed, or one runs."""
        self._audit_refusal(caller, job, error, 0, "")

    def take_key_command(self, caller: Caller, budget: str) -> None:
        """Take one from `caller`'s key-command `budget` on this process; RateLimited (unaudited here) if none.

        `budget`: `key_status` (status), `key_commands` (the changes) or `key_token_refusals` (Vault tokens
        Vault refused, taken before the lookup), each per certificate: CN and serial (review 33, R33-4), and
        per client, CLIENT_CERTIFICATES times that for its certificates together (attack 40, A40-2).
        """
        self._policy.permissions(caller.name)  # Unauthenticated for a client the policy does not know
        buckets = self._key_command_buckets[budget]
        wait = buckets.take(caller.name, caller.serial)
        if not wait.seconds:
            return
        what, key = _KEY_COMMAND_BUDGETS[budget]
        if wait.whole_client:
            limit = buckets.client_limit(caller.name)
            who = f"client {caller.name!r}'s certificates together"
            per = f"{CLIENT_CERTIFICATES} x {key} in the policy; per client and vault process"
        else:
            limit = buckets.limit(caller.name)
            serial = f" (certificate serial {caller.serial})" if caller.serial else ""
            who, per = f"client {caller.name!r}{serial}", f"{key} in the policy; per certificate and vault process"
        raise RateLimited(
            f"{who} may {what.format(burst=limit.burst)} at once, then one every"
            f" {1 / limit.per_second:.3g} s ({per}); retry in {math.ceil(wait.seconds)} s",
            retry_after=wait.seconds,
        )

    def give_back_key_command(self, caller: Caller, budget: str) -> None:
        """Put back one taken from `caller`'s key-command `budget` (a token check that Vault passed)."""
        self._key_command_buckets[budget].give_back(caller.name, caller.serial)

    def authorize_audit_report(self, caller: Caller, report: str) -> None:
        """Raise PermissionDenied (audited, as every refusal) unless the policy gives `caller` audit report `report`."""
        try:
            self._policy.check_audit_report(caller.name, report)
        except (PermissionDenied, InvalidRequest) as error:
            self._audit_refusal(caller, AUDIT_REPORT_ACTIONS.get(report, report), error, 0, "")
            raise

    def take_audit_report(self, caller: Caller) -> None:
        """Take one report from `caller`'s audit-report budget on this process; RateLimited (unaudited here) if none."""
        limit = self._policy.permissions(caller.name).limits.audit_reports
        try:
            self._audit_report_limiter.take(caller.name, 1)
        except RateLimited as over:
            raise RateLimited(
                f"client {caller.name!r} may ask this vault for {limit.burst} audit report(s) at once, then one every"
                f" {1 / limit.per_second:.0f} s (audit_reports_per_second in the policy); retry in"
                f" {over.retry_after:.0f} s",
                retry_after=over.retry_after,
            ) from None

    def audit_reports_of(self, caller: Caller) -> frozenset[str]:
        """The audit reports the policy gives `caller` (a question, never refused nor audited)."""
        return self._policy.audit_reports_of(caller.name)

    def refuse_audit_report(self, caller: Caller, action: str, error: VaultError) -> None:
        """Audit (throttled per peer) an audit report refused or failed after its authorization."""
        self._audit_refusal(caller, action, error, 0, "")

    def refuse(
        self, peer: str, caller: Caller | None, action: str, error: VaultError, item_count: int, within: str = ""
    ) -> None:
        """Audit a call refused before it reached a use case (throttled per peer, and in bucket `within` if given).

        Raises TooManyRequests when the peer is over its refusal rate.
        """
        self._refused(peer, refusal_event(caller, action, error, item_count, ""), error, within)

    def _audit_refusal(self, caller: Caller | None, action: str, error: VaultError, count: int, types: str) -> None:
        """Audit a refused call (throttled per peer), without its purpose: no value of it was compared."""
        event = refusal_event(caller, action, error, count, types)
        self._refused(caller_name(caller) or "<anonymous>", event, error)

    def _refused(self, peer: str, event: AuditEvent, error: VaultError, within: str = "") -> None:
        """Audit `event` (throttled per peer); an identity refused is also logged, as often as audited.

        The log names the certificate by serial and SHA-256 only (what the audit row holds), so the
        security team sees a revoked or expired certificate being tried without reading the audit.
        """
        self.refusals.refused(peer, event, within)
        if isinstance(error, Unauthenticated):
            log.warning(
                "refused the client certificate with serial %s, sha256 %s (%s): %s",
                event.client_serial or "unknown",
                event.client_cert_sha256 or "unknown",
                event.action,
                error,
            )

    def _kept(self, client: str, purpose: str, checked: RevealedCall, *, by_shape: bool = False) -> str:
        """The purpose as a served call's audit row keeps it: in clear, in part, or withheld (empty).

        Kept only when every value the call's tokens name was opened and compared with it and it
        spells none of them (`RevealedCall.keeps_purpose`: one spelling a value the call reveals
        masked or erases, or naming a value that exists but was not compared - erased, or it does
        not open - is withheld whole; a string that is not a token and a token never issued name
        no value and withhold nothing). Of a purpose so kept, the runs of groups that name a value
        stored for another call (`stored_values`, cached per purpose; attack 14, finding 3) are
        withheld, each replaced by WITHHELD_SPAN, and the rest kept (`purpose_spans`: a producer
        storing `INC2026Q3` blanked every `INC-2026Q3-...` reference whole; insider round 16, #2) -
        withheld, never refused: a refusal would tell the caller the value is stored.

        Every withhold, whole or in part, is counted alike (`purposes_withheld`, no label) and none
        is logged: a log line or a label per cause told whoever reads the logs or the metrics
        whether a guess the purpose spelled is stored anywhere in the vault (review 15, finding 2).
        The row's outcome already counts the tokens not compared.

        What is withheld for spelling a value of the call or naming a stored one is remembered for
        `client` (`withheld_purposes`, in memory per replica: the whole purpose, or the groups
        withheld), and the client's later call with the identical purpose withholds it again: an
        erasure split into calls, device first, kept `GDPR-2026-801-<device id>` in the ip call's row
        once the device was erased (attack 15, finding 4). A purpose withheld only for a value not
        compared is not remembered.

        `by_shape` (an Erase whose purpose holds what has the shape of a stored value,
        `shaped_as_a_stored_value`) withholds it whole whatever the comparison and the lookup found:
        the decision reads the text alone, so it tells nothing of what is stored, and it holds on
        every replica and after restarts, where the memory above does not (review 16, finding 2).
        """
        if not checked.purpose_compared:
            _count_withheld()
            return WITHHELD_PURPOSE
        if checked.purpose_withheld:
            self.withheld_purposes.remember(client, purpose)
            _count_withheld()
            return WITHHELD_PURPOSE
        named = self.stored_values.groups_naming_stored_values(purpose)
        if named:
            self.withheld_purposes.remember(client, purpose, named)
        withheld = named | self.withheld_purposes.withheld_before(client, purpose)
        if by_shape:
            withheld = every_group(purpose)
        if not withheld:
            return purpose
        _count_withheld()
        return with_groups_withheld(purpose, withheld)


def caller_name(caller: Caller | None) -> str | None:
    """The caller's name (None without a caller)."""
    return caller.name if caller is not None else None


def refusal_event(caller: Caller | None, action: str, error: VaultError, count: int, types: str) -> AuditEvent:
    """A refusal as audited: its purpose withheld.

    A refused call opened no value (a refusal over the rate limit must not: opening is what the
    limit meters), so nothing tells whether its purpose spells one of them: a privacy officer's
    Erase refused over the erase burst with `GDPR-2026-801-<device id>` kept the device id for
    good (attack 12, finding 1). A purpose refused as unfit may hold what made it unfit.

    A certificate refused as no client's (revoked, expired, odd) is `<anonymous>`, with the serial
    and SHA-256 of the certificate as far as it could be read (attack 18, finding 5).
    """
    presented = caller or Caller("<anonymous>", *_presented_certificate(error))
    return AuditEvent(
        presented.name,
        action,
        f"refused: {type(error).__name__}",
        count,
        WITHHELD_PURPOSE,
        types,
        presented.serial,
        presented.cert_sha256,
    )


def _presented_certificate(error: VaultError) -> tuple[str, str]:
    """The serial and SHA-256 of the certificate an Unauthenticated refusal names (empty otherwise)."""
    if isinstance(error, Unauthenticated):
        return error.serial, error.cert_sha256
    return "", ""


def present_types(types: Sequence[TokenType | None]) -> list[TokenType]:
    """The token types among `types`, found by identity in C (an Enum member hashes in Python)."""
    return [member for member in _TOKEN_TYPES if member in types]


def type_names(present: Iterable[TokenType]) -> str:
    """Type names as the audit log keeps them: sorted, comma-separated."""
    return ",".join(sorted(member.type_name for member in present))


_withheld = 0
_withheld_lock = threading.Lock()


def purposes_withheld() -> int:
    """How many served Detokenize and Erase calls of this process had their purpose withheld, whatever the cause."""
    return _withheld


def _count_withheld() -> None:
    global _withheld
    with _withheld_lock:
        _withheld += 1
