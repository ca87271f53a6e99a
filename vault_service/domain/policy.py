"""Who may do what: per client identity (certificate CN), per token type.

Policy file (TOML):

    [clients.etl-service]
    tokenize = ["ip", "device_id"]

    [clients.analyst.detokenize]
    ip = "plain"
    device_id = "masked"

    [clients.analyst.limits]        # values per second and bursts; a client without its own
    detokenize_per_second = 100     # gets [defaults.limits], or the built-in DEFAULT_LIMITS
    detokenize_burst = 1000         # (limits fail closed)

    [clients.etl-service.limits]
    tokenize_per_second = 200000    # values sent to Tokenize
    tokenize_burst = 1000000
    new_tokens_per_second = 100000  # values never seen before (what a dictionary sweep makes)
    new_tokens_burst = 500000

    [clients.privacy-officer]       # may erase values (GDPR) by token
    erase = ["ip", "device_id"]

    [clients.security-team]         # may have the service run its key commands (KeyJobs) with its
    key_jobs = ["reencrypt", "reindex", "status", "rewrap", "rotate-encryption-key",
                "rotate-fingerprint-key", "retire-kek-versions"]  # own credentials: no value returned,
    audit_reports = ["verify", "who-saw"]  # and make its audit reports (AuditReports): a verdict, rows

    [clients.security-lookups]      # tokenize AND reveal: a dictionary oracle (guess a value,
    tokenize = ["ip"]               # tokenize it, look for the token), refused at start unless
    oracle = "accepted"             # the client's table accepts it explicitly
    [clients.security-lookups.detokenize]
    ip = "masked"

    [defaults.limits]               # erasure is irreversible: slow by default
    erase_per_second = 0.005        # tokens erased (18 an hour)
    erase_burst = 100
    audit_reports_per_second = 0.0033  # audit reports (each reads the whole log): 6 at once,
    audit_reports_burst = 6            # then one every 5 minutes, per vault process
    key_commands_per_second = 0.2      # KeyJobs' short changes (rewrap, rotate-*, retire-kek-versions):
    key_commands_burst = 10            # 10 at once, then one every 5 s, per certificate and vault process
    key_status_per_second = 1          # KeyJobs' status (a read, a budget of its own): 30 at once,
    key_status_burst = 30              # then one a second, per certificate and vault process
    key_token_refusals_per_second = 0.5  # retire-kek-versions' Vault tokens Vault refused (each one a
    key_token_refusals_burst = 30        # lookup): 30, then one every 2 s, per certificate and process

A client absent from the file may do nothing. Reveal levels: `plain`, `masked`, `none`.
`[defaults]` holds only `limits`. A client that may tokenize and see any type (`plain` or `masked`)
needs `oracle = "accepted"` in its table (DESIGN §1b: tokenize + read is a dictionary oracle for
every ip and device id); so does one that may tokenize and ask who saw a token (`audit_reports`
with `who-saw`: whether, when and by whom a guessed value was revealed). A `*_burst` needs its
`*_per_second` (a rate alone gets a burst of one second's worth) and is a whole number; anything the
vault cannot apply as written is InvalidValue (the vault does not start).
"""

from __future__ import annotations

import enum
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vault_service.domain.errors import InvalidRequest, InvalidValue, PermissionDenied, Unauthenticated
from vault_service.domain.rate_limit import RateLimit
from vault_service.domain.token_types import TokenType


class RevealLevel(enum.Enum):
    """How much of a value a client may see."""

    NONE = "none"
    MASKED = "masked"
    PLAIN = "plain"


DEFAULT_AUDIT_REPORTS = RateLimit(1 / 300, 6)
"""Six audit reports at once (a person's few tokens for an access request), then one every 5 minutes."""
DEFAULT_KEY_COMMANDS = RateLimit(1 / 5, 10)
"""Ten short key changes at once (a runbook cycle runs four: rewrap, rotate-*, retire), then one every 5 s."""
DEFAULT_KEY_STATUS = RateLimit(1, 30)
"""Thirty `status` calls at once (a runbook cycle runs three), then one a second."""
DEFAULT_KEY_TOKEN_REFUSALS = RateLimit(1 / 2, 30)
"""Thirty Vault tokens Vault refused to `retire-kek-versions` (typos, expired logins), then one every 2 s."""


@dataclass(frozen=True)
class Limits:
    """A client's quotas (per second, burst): values tokenized, new tokens, values revealed, erasures, reports, ..."""

    tokenize: RateLimit
    new_tokens: RateLimit
    detokenize: RateLimit
    erase: RateLimit
    audit_reports: RateLimit = DEFAULT_AUDIT_REPORTS
    """Reports (AuditReports' Verify and WhoSaw together) each vault process makes for the client: each
    reads the whole log, holds the one report at a time of that process and slows its serving."""
    key_commands: RateLimit = DEFAULT_KEY_COMMANDS
    """KeyJobs' short changes (rewrap, rotate-*, retire-kek-versions together) each vault process runs for each
    of the client's certificates (CN and serial), and the client's certificates together CLIENT_CERTIFICATES times
    that (attack 40, A40-2): each reads every data key row and asks Transit (attack 28, F7). retire-kek-versions
    is charged only once Vault has accepted the operator's token (review 33, R33-4)."""
    key_status: RateLimit = DEFAULT_KEY_STATUS
    """KeyJobs' `status` (a read) each vault process answers for each of the client's certificates, a budget of
    its own: a `status` flood never refuses a change (review 33, R33-4; attack 28, F7: 50 unmetered Status
    calls a second slowed every other client's reveals tenfold)."""
    key_token_refusals: RateLimit = DEFAULT_KEY_TOKEN_REFUSALS
    """Operator Vault tokens Vault refused to retire-kek-versions (each one a lookup in Vault) each vault process
    takes from each of the client's certificates; none left: refused before Vault is asked (R33-4)."""


DEFAULT_LIMITS = Limits(
    tokenize=RateLimit(100, 1000),
    new_tokens=RateLimit(100, 1000),
    detokenize=RateLimit(10, 100),
    erase=RateLimit(0.005, 100),  # one person's values at once, then 18 an hour (432 a day)
)
"""For a client the policy gives no limits and the policy has no [defaults.limits]."""

_LIMIT_KEYS = {
    "tokenize": ("tokenize_per_second", "tokenize_burst"),
    "new_tokens": ("new_tokens_per_second", "new_tokens_burst"),
    "detokenize": ("detokenize_per_second", "detokenize_burst"),
    "erase": ("erase_per_second", "erase_burst"),
    "audit_reports": ("audit_reports_per_second", "audit_reports_burst"),
    "key_commands": ("key_commands_per_second", "key_commands_burst"),
    "key_status": ("key_status_per_second", "key_status_burst"),
    "key_token_refusals": ("key_token_refusals_per_second", "key_token_refusals_burst"),
}


@dataclass(frozen=True)
class ClientPermissions:
    """What one client may do."""

    tokenize: frozenset[TokenType] = frozenset()
    detokenize: Mapping[TokenType, RevealLevel] = field(default_factory=dict)
    erase: frozenset[TokenType] = frozenset()
    limits: Limits = DEFAULT_LIMITS
    key_jobs: frozenset[str] = frozenset()
    """The key jobs (KEY_JOBS) the service runs for this client (KeyJobs), with its own credentials."""
    audit_reports: frozenset[str] = frozenset()
    """The audit reports (AUDIT_REPORTS) the service makes for this client (AuditReports), with its own credentials."""


@dataclass(frozen=True)
class AccessPolicy:
    """The whole policy: client name -> permissions."""

    clients: Mapping[str, ClientPermissions]
    default_limits: Limits = DEFAULT_LIMITS

    def permissions(self, client: str | None) -> ClientPermissions:
        """The permissions of `client`; Unauthenticated when there is no identity or it is unknown."""
        if not client:
            raise Unauthenticated("no client identity: connect with a client certificate issued by the vault CA")
        found = self.clients.get(client)
        if found is None:
            raise Unauthenticated(f"client {client!r} is unknown to the vault policy; ask the vault owners to add it")
        return found

    def limits_of(self, kind: str) -> dict[str, RateLimit]:
        """Client -> its limit of `kind` (tokenize, new_tokens, detokenize, erase, audit_reports, key_commands, ...)."""
        return {name: getattr(p.limits, kind) for name, p in self.clients.items()}

    def check_tokenize(self, client: str | None, token_type: TokenType) -> None:
        """Raise unless `client` may tokenize values of `token_type`."""
        if token_type not in self.permissions(client).tokenize:
            raise PermissionDenied(f"client {client!r} may not tokenize {token_type.type_name} values")

    def reveal_level(self, client: str | None, token_type: TokenType) -> RevealLevel:
        """How `client` may see values of `token_type` (NONE when not at all)."""
        return self.permissions(client).detokenize.get(token_type, RevealLevel.NONE)

    def check_key_job(self, client: str | None, job: str) -> None:
        """Raise PermissionDenied unless the service may run key job `job` for `client`; InvalidRequest: no such job."""
        if job not in KEY_JOBS:
            raise InvalidRequest(f"no key job {job!r}; the key jobs are {', '.join(KEY_JOBS)}")
        if job not in self.permissions(client).key_jobs:
            raise key_job_refusal(str(client), job)

    def check_audit_report(self, client: str | None, report: str) -> None:
        """Raise PermissionDenied unless the service may make audit report `report` for `client`."""
        if report not in AUDIT_REPORTS:
            raise InvalidRequest(f"no audit report {report!r}; the audit reports are {', '.join(AUDIT_REPORTS)}")
        if report not in self.permissions(client).audit_reports:
            raise audit_report_refusal(str(client), report)

    def audit_reports_of(self, client: str | None) -> frozenset[str]:
        """The audit reports the service makes for `client` (none for a client the policy does not know)."""
        found = self.clients.get(client or "")
        return found.audit_reports if found is not None else frozenset()

    def may_detokenize_anything(self, client: str | None) -> bool:
        """Whether any type is revealed to `client` at all."""
        levels = self.permissions(client).detokenize.values()
        return any(level is not RevealLevel.NONE for level in levels)


KEY_JOBS = (
    "reencrypt",
    "reindex",
    "status",
    "rewrap",
    "rotate-encryption-key",
    "rotate-fingerprint-key",
    "retire-kek-versions",
)
"""The key commands the vault runs in-process for an authorized client (the KeyJobs gRPC service): the two
jobs that open every value, and the short commands (service/key_commands.py)."""


def key_job_refusal(client: str, job: str) -> PermissionDenied:
    """Why `client` may not have the service run `job`, in words a person can act on."""
    return PermissionDenied(
        f"client {client!r} may not run the key job {job}: key jobs are the security team's; connect with the"
        f' security team\'s client certificate (a client with key_jobs = ["{job}"] in its [clients.<name>] table'
        " of the vault policy)"
    )


AUDIT_REPORTS = ("verify", "who-saw")
"""The audit reports the vault makes for an authorized client (the AuditReports gRPC service)."""
AUDIT_REPORT_ACTIONS = {"verify": "audit-verify", "who-saw": "who-saw"}
"""Each audit report's action in the audit log (its rows, and its refusals')."""


def audit_report_refusal(client: str, report: str) -> PermissionDenied:
    """Why `client` may not have the service make audit report `report`, in words a person can act on."""
    return PermissionDenied(
        f"client {client!r} may not ask for the audit report {report}: audit reports are the security team's;"
        f' connect with the security team\'s client certificate (a client with audit_reports = ["{report}"] in its'
        " [clients.<name>] table of the vault policy)"
    )


ORACLE_ACCEPTED = "accepted"
"""The one value of a client's `oracle` key: it may tokenize and see values, knowingly."""


def _parse_client(name: str, raw: Mapping[str, Any], defaults: Limits) -> ClientPermissions:
    if not isinstance(raw, Mapping):
        raise InvalidValue(f"policy for {name!r} must be a table ([clients.{name}])")
    unknown = set(raw) - {"tokenize", "detokenize", "erase", "limits", "oracle", "key_jobs", "audit_reports"}
    if unknown:
        raise InvalidValue(f"policy for {name!r} has unknown keys: {', '.join(sorted(unknown))}")
    oracle = raw.get("oracle")
    if oracle is not None and oracle != ORACLE_ACCEPTED:
        raise InvalidValue(f"policy for {name!r}: oracle must be {ORACLE_ACCEPTED!r} (or absent)")
    tokenize = frozenset(TokenType.from_name(t) for t in raw.get("tokenize", []))
    erase = frozenset(TokenType.from_name(t) for t in raw.get("erase", []))
    detokenize = {}
    for type_name, level in raw.get("detokenize", {}).items():
        try:
            detokenize[TokenType.from_name(type_name)] = RevealLevel(level)
        except ValueError:
            raise InvalidValue(
                f"policy for {name!r}: reveal level {level!r} is not one of plain, masked, none"
            ) from None
    revealed = sorted(t.type_name for t, level in detokenize.items() if level is not RevealLevel.NONE)
    if tokenize and revealed and oracle != ORACLE_ACCEPTED:
        raise InvalidValue(
            f"policy for {name!r}: it may tokenize and see {', '.join(revealed)} values - a dictionary "
            f"oracle (guess a value, tokenize it, find its token); give tokenize and detokenize to "
            f"different clients, or accept it knowingly with oracle = {ORACLE_ACCEPTED!r} in [clients.{name}]"
        )
    audit_reports = _parse_audit_reports(name, raw.get("audit_reports", []))
    if tokenize and "who-saw" in audit_reports and oracle != ORACLE_ACCEPTED:
        raise InvalidValue(
            f"policy for {name!r}: it may tokenize and ask who saw a token - an oracle (guess a value, tokenize"
            " it, learn whether, when, by whom and for which case it was revealed or erased); give tokenize and"
            f" who-saw to different clients, or accept it knowingly with oracle = {ORACLE_ACCEPTED!r} in"
            f" [clients.{name}]"
        )
    limits = _parse_limits(name, raw.get("limits", {}), defaults)
    return ClientPermissions(
        tokenize,
        detokenize,
        erase,
        limits,
        _parse_key_jobs(name, raw.get("key_jobs", [])),
        audit_reports=audit_reports,
    )


def _parse_key_jobs(name: str, raw: object) -> frozenset[str]:
    """A client's `key_jobs`: names from KEY_JOBS; InvalidValue naming any other (the vault does not start)."""
    return _parse_names(name, raw, "key_jobs", "job", KEY_JOBS)


def _parse_audit_reports(name: str, raw: object) -> frozenset[str]:
    """A client's `audit_reports`: names from AUDIT_REPORTS; InvalidValue naming any other (no start)."""
    return _parse_names(name, raw, "audit_reports", "report", AUDIT_REPORTS)


def _parse_names(name: str, raw: object, field: str, kind: str, known: Sequence[str]) -> frozenset[str]:
    """The list `field` of client `name`: `kind` names from `known`; InvalidValue naming anything else."""
    listed = ", ".join(known)
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise InvalidValue(f"policy for {name!r}: {field} must be a list of {kind} names ({listed})")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise InvalidValue(
            f"policy for {name!r}: {field} names unknown {kind}(s) {', '.join(unknown)}; known: {listed}"
        )
    return frozenset(raw)


def _parse_limits(name: str, raw: Mapping[str, Any], defaults: Limits) -> Limits:
    """A client's (or the defaults') limits; InvalidValue naming the client and key if malformed.

    A burst without its rate, or a burst that is not a whole number, is refused rather than
    dropped or truncated: a mistyped tightening must stop the service, never fall back to the
    (looser) default.
    """
    if not isinstance(raw, Mapping):
        raise InvalidValue(f"policy limits for {name!r} must be a table of *_per_second and *_burst keys")
    known = {key for pair in _LIMIT_KEYS.values() for key in pair}
    unknown = set(raw) - known
    if unknown:
        raise InvalidValue(f"policy limits for {name!r} have unknown keys: {', '.join(sorted(unknown))}")
    chosen = {}
    for kind, (rate_key, burst_key) in _LIMIT_KEYS.items():
        if rate_key not in raw:
            if burst_key in raw:
                raise InvalidValue(
                    f"policy limits for {name!r}: {burst_key} is set without {rate_key}; set both "
                    f"(a burst alone would be ignored and the default {kind} limit applied)"
                )
            chosen[kind] = getattr(defaults, kind)
            continue
        per_second = raw[rate_key]
        if isinstance(per_second, bool) or not isinstance(per_second, int | float) or not math.isfinite(per_second):
            raise InvalidValue(f"policy limits for {name!r}: {rate_key} must be a finite number > 0")
        burst = raw.get(burst_key, max(1, int(per_second)))
        if isinstance(burst, bool) or not isinstance(burst, int):
            raise InvalidValue(f"policy limits for {name!r}: {burst_key} must be a whole number >= 1")
        try:
            chosen[kind] = RateLimit(float(per_second), burst)
        except ValueError:
            raise InvalidValue(f"policy limits for {name!r}: {rate_key} must be > 0 and {burst_key} >= 1") from None
    return Limits(**chosen)


def _default_limits_table(raw: object) -> Mapping[str, Any]:
    """The `[defaults.limits]` table; InvalidValue on any other key of `[defaults]` or a non-table.

    `[defaults.limit]` or limit keys written directly under `[defaults]` would otherwise be
    ignored and the built-in (looser) limits applied: a tightening typo must stop the vault.
    """
    if not isinstance(raw, Mapping):
        raise InvalidValue("policy: defaults must be a table ([defaults.limits])")
    unknown = set(raw) - {"limits"}
    if unknown:
        raise InvalidValue(
            f"policy [defaults] has unknown keys: {', '.join(sorted(unknown))} (only [defaults.limits] is read)"
        )
    limits = raw.get("limits", {})
    if not isinstance(limits, Mapping):
        raise InvalidValue("policy: defaults.limits must be a table ([defaults.limits])")
    return limits


def parse_policy(document: Mapping[str, Any]) -> AccessPolicy:
    """Build a policy from a parsed TOML document; InvalidValue with the reason if malformed."""
    clients = document.get("clients")
    if not isinstance(clients, Mapping):
        raise InvalidValue("policy must have a [clients.<name>] table per client")
    unknown = set(document) - {"clients", "defaults"}
    if unknown:
        raise InvalidValue(f"policy has unknown tables: {', '.join(sorted(unknown))}")
    defaults = _parse_limits("defaults", _default_limits_table(document.get("defaults", {})), DEFAULT_LIMITS)
    return AccessPolicy({name: _parse_client(name, raw, defaults) for name, raw in clients.items()}, defaults)


def load_policy(path: Path) -> AccessPolicy:
    """Read and validate a policy file; InvalidValue naming the file and the fault if it is none."""
    with path.open("rb") as handle:
        try:
            document = tomllib.load(handle)
        except UnicodeDecodeError as error:  # tomllib reads UTF-8 only; its message would quote the bytes
            raise InvalidValue(f"policy file {path} is not UTF-8 text (byte {error.start})") from None
        except tomllib.TOMLDecodeError as error:  # says where and what, never the file's text
            raise InvalidValue(f"policy file {path} is not valid TOML ({error})") from None
    return parse_policy(document)
