"""Prometheus metrics of the vault: calls and items by method and code, latency, cache, health, per-client volumes.

Labels carry method names, status codes, client names (certificate CNs the policy knows) and dependency
names only, never values or tokens.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from vault_service.adapters.client_crl_lists import REFUSAL_REASONS
from vault_service.adapters.postgres.prepared import planted_statements_replaced
from vault_service.adapters.postgres.tokens import PostgresTokenStore
from vault_service.domain.grant_bound import over_grants
from vault_service.domain.policy import AccessPolicy
from vault_service.service.erase_commitment_check import erase_rows_uncommitted, erase_rows_uncommitted_found
from vault_service.service.erase_commitments import erase_walk_heads_changed
from vault_service.service.erased_tokens import erase_read_window_tampered, erase_rows_unverified, full_read
from vault_service.service.maintenance import catalog_findings
from vault_service.service.revealing import erased_values_present
from vault_service.service.token_cache import TokenCache
from vault_service.service.vault_base import purposes_withheld

REQUESTS = Counter("tokenvault_grpc_requests_total", "gRPC calls by method and status code", ["method", "code"])
ITEMS = Counter("tokenvault_grpc_items_total", "Items in gRPC calls by method and per-item code", ["method", "code"])
LATENCY = Histogram(
    "tokenvault_grpc_request_seconds",
    "gRPC call latency by method",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CALLS_OVER_CLIENT_SHARE = Counter(
    "tokenvault_calls_over_client_share_total",
    "Calls refused because the client already had its share of calls in progress"
    " (TOKENVAULT_MAX_CALLS_PER_CLIENT), by client and method",
    ["client", "method"],
)
CALLS_WITHOUT_ROOM_TO_WAIT = Counter(
    "tokenvault_calls_without_room_to_wait_total",
    "Calls refused (RESOURCE_EXHAUSTED, retry-after) because as many calls as the server lets wait for their"
    " request were waiting and no other client had two more waiting than this one, by client and method",
    ["client", "method"],
)
DEPENDENCY_UP = Gauge("tokenvault_dependency_up", "1 when the dependency answered the last check", ["dependency"])
ROTATION_ROWS = Counter("tokenvault_rotation_rows_total", "Rows processed by key rotation jobs", ["phase"])
ROTATION_ROWS_LEFT = Gauge("tokenvault_rotation_rows_left", "Rows a key rotation job still has to process", ["phase"])


TOKENIZE_VALUES = Counter("tokenvault_tokenize_values_total", "Values sent to Tokenize, by client", ["client"])
NEW_TOKENS = Counter(
    "tokenvault_tokenize_new_tokens_total",
    "Tokens issued for values never seen before, by client (a dictionary sweep shows here)",
    ["client"],
)
NEW_TOKENS_REFUSED = Counter(
    "tokenvault_tokenize_new_tokens_refused_total",
    "Values not stored that Tokenize refused new tokens for, over the client's new-token limit, by client"
    " (a sweep probing by refusals shows here: the sweep alert adds it to the new tokens)",
    ["client"],
)
VALUES_REVEALED = Counter(
    "tokenvault_detokenize_values_revealed_total",
    "Values Detokenize showed, plain or masked, by client (a token refused, unknown or erased is not counted,"
    " nor any token of a refused call); alerts RevealVolumeHigh and RevealVolumeHighDaily compare a client's hour"
    " and day with its budget",
    ["client"],
)
REVEAL_BUDGET_PER_HOUR = Gauge(
    "tokenvault_client_reveal_budget_per_hour",
    "Values the access policy lets a client have revealed per hour (detokenize_per_second x 3600; its burst"
    " comes on top), for each client the policy lets see any type; alerts RevealVolumeHigh, RevealVolumeHighDaily",
    ["client"],
)


AUDIT_CHECKPOINT_EXPORTED = Gauge(
    "tokenvault_audit_checkpoint_exported_timestamp_seconds",
    "Unix time of the last audit checkpoint this process signed and exported (0: none yet);"
    " it stops moving when anchoring stops while calls are still audited",
)
AUDIT_CHECKPOINT_PLANTED = Counter(
    "tokenvault_audit_checkpoint_planted",
    "Audit upkeep rounds that found a database checkpoint beyond the audit log's head (written behind"
    " the service's back); the head was signed and exported without being stored",
)
AUDIT_CHECKPOINT_REFUSED = Counter(
    "tokenvault_audit_checkpoint_refused",
    "Audit upkeep rounds whose checkpoint the database refused to store (a check or trigger raising, a"
    " privilege taken away; not the database being unreachable); the head was signed and exported anyway",
)

AUDIT_ID_SEQUENCE_TAMPERED = Counter(
    "tokenvault_audit_id_sequence_tampered",
    "Audit upkeep rounds that found an audit row beyond the audit id sequence (written behind the"
    " service's back; the rows within the sequence went on being signed), or the sequence altered"
    " to number rows out of commit order (a cache, a negative increment)",
)
CATALOG_CHECK_INTERRUPTED = Counter(
    "tokenvault_catalog_check_interrupted",
    "Tries of the catalog check (at start and each key-check round) whose query was cancelled or timed out, by"
    " SQLSTATE name: query_canceled (pg_cancel_backend by a session of the vault's own role, or a statement timeout),"
    " lock_not_available (a lock timeout); an outage, retried, never a finding - a steady rate is someone cancelling"
    " it (attack 48, A48-1)",
    ["reason"],
)
AUDIT_ROWS_MISSING = Counter(
    "tokenvault_audit_rows_missing",
    "Audit rows this process appended that the chain up to the next checkpoint's head did not hold"
    " (diverted out of vault.audit_log or changed); their ids are logged and named in the exported checkpoint",
)
AUDIT_ROWS_UNCHECKED = Counter(
    "tokenvault_audit_rows_unchecked",
    "Audit appends this process refused because the rows it appended before went unchecked by the audit"
    " upkeep too long (TOKENVAULT_AUDIT_UNCHECKED_SECONDS) or too many waited, and rows still unchecked"
    " when it stopped (logged with their ids)",
)
AUDIT_UPKEEP_FAILED = Counter(
    "tokenvault_audit_upkeep_failed",
    "Audit upkeep rounds that failed (database or Vault away, an unreadable row, the checkpoint file"
    " unwritable, or held past 6 intervals: then once more every interval it is held); each is retried at the"
    " next interval",
)
AUDIT_OLDEST_UNCHECKED = Gauge(
    "tokenvault_audit_oldest_unchecked_seconds",
    "Seconds the oldest audit row this process appended has waited to be checked against the chain and anchored"
    " in an exported checkpoint by the audit upkeep (0: none waits); past 3 intervals the log names the waiting"
    " ids, and says whether they were checked and wait for the export",
)

AUDIT_DATABASE_UNREACHABLE = Gauge(
    "tokenvault_audit_database_unreachable",
    "1 while this process's audit upkeep fails for want of any connection to the vault's database (an outage:"
    " none within the pool's timeout, and no server answering a connection outside the pool either - refused at"
    " the socket, timed out, a name or TLS failing, or starting up or shutting down; a server refusing it answers:"
    " tokenvault_audit_database_login_refused_total), 0 otherwise; alert AuditDatabaseUnreachable, and the"
    " tampering alerts AuditRowsUnchecked and AuditRowsWaiting are held meanwhile",
)
AUDIT_DATABASE_LOGIN_REFUSED = Counter(
    "tokenvault_audit_database_login_refused_total",
    "Audit upkeep rounds that got no pooled connection and whose connection of their own, outside the pool, the"
    " database's server refused (a connection limit of the database or role, the CONNECT privilege or LOGIN taken"
    " away, pg_hba): the database answers, so not an outage, and someone keeps the vault from connecting while its"
    " pooled connections are held; alert AuditDatabaseLoginRefused",
)

CLIENT_CRL_NEXT_UPDATE = Gauge(
    "tokenvault_client_crl_next_update_timestamp_seconds",
    "Unix time of the next update the client CA promised in the client CRL in force (TOKENVAULT_TLS_CLIENT_CRL;"
    " the earliest of its lists; +Inf when none promises one, or without a CRL); past it a (re)starting"
    " vault refuses the list and exits 2: alert ClientCrlNearExpiry",
)
CLIENT_CRL_NEXT_UPDATE.set(float("inf"))


def watch_client_crl_next_update(next_update: Callable[[], float]) -> None:
    """Export `next_update` (Unix time, read at each scrape) as the client CRL's next update."""
    CLIENT_CRL_NEXT_UPDATE.set_function(next_update)


CLIENT_CRL_REFUSED = Counter(
    "tokenvault_client_crl_refused_total",
    "Client CRL files (TOKENVAULT_TLS_CLIENT_CRL) a running vault refused, by reason (the log says more);"
    " the lists in force before stay in force, so revocations published since are not enforced",
    ["reason"],
)
for _reason in REFUSAL_REASONS:
    CLIENT_CRL_REFUSED.labels(reason=_reason)
CLIENT_CRL_FILE_IN_FORCE = Gauge(
    "tokenvault_client_crl_file_in_force",
    "1 when the client CRL file on disk is the list in force (or no CRL is configured), 0 while its last"
    " version was refused and older lists stay in force: alert ClientCrlRefused",
)
CLIENT_CRL_FILE_IN_FORCE.set(1)


def observe_client_crl_refused(reason: str) -> None:
    """Count one client CRL file version refused for `reason` (one of REFUSAL_REASONS)."""
    CLIENT_CRL_REFUSED.labels(reason=reason).inc()


def watch_client_crl_file_in_force(file_in_force: Callable[[], bool]) -> None:
    """Export `file_in_force` (read at each scrape) as 1/0: whether the CRL file on disk is the list in force."""
    CLIENT_CRL_FILE_IN_FORCE.set_function(lambda: 1.0 if file_in_force() else 0.0)


AUDIT_LOCK_HOLDERS = Counter(
    "tokenvault_audit_lock_holders",
    "Database sessions found holding the audit chain's lock for 5 s or more in one transaction, or in a session"
    " outside any transaction (each round that finds one), by whether the audit upkeep ended them (left: of a"
    " role it may not signal, waiting for a synchronous standby, or gone first). Appends, so audited calls,"
    " fail while one holds it: someone with the serving role's credentials (attack 26, F2)",
    ["ended"],
)

KEYS_LOCK_HOLDERS = Counter(
    "tokenvault_keys_lock_holders",
    "Database sessions found holding the key-generation lock, or rows of vault.data_keys, for 5 s or more in one"
    " transaction, or the lock in a session outside any transaction (each round that finds one; never a key"
    " operation of this process), by whether the audit upkeep ended them. New tokens fail while one holds it:"
    " someone with the serving role's credentials (attack 27, F3/F5)",
    ["ended"],
)

LOCK_BLOCKERS = Counter(
    "tokenvault_lock_blockers",
    "Database sessions found keeping a session of the vault waiting for a lock (any: a client's call-budget row, a"
    " key row, the key-generation lock, a row of vault.tokens) for 5 s or more in one transaction, keeping a key"
    " operation of this process waiting 1 s, or keeping a session of the serving role waiting 1 s for the audit"
    " chain's lock without being one of the vault's appends (review 33, R33-1; never a session of this process),"
    " by whether the audit upkeep ended them; and sessions of the serving role's logins holding more than 256"
    " entries of PostgreSQL's lock table (attack 29, F1: filling it fails every call). Calls of a client, new tokens"
    " or key jobs fail while one does: someone with the serving role's credentials (review 31, R31-2/R31-6)",
    ["ended"],
)

LOCK_WATCH_BLIND = Gauge(
    "tokenvault_lock_watch_blind",
    "1 while the audit upkeep's lock watch cannot see or end sessions of the serving role's other logins (other"
    " pods' Vault-made users): migration 0042 not applied, or its functions' owner lacking pg_read_all_stats or"
    " pg_signal_backend (docs/production.md; review 33, R33-6). Sessions holding the vault's locks are then not ended",
)

DATABASE_DEFAULTS_SET = Gauge(
    "tokenvault_database_defaults_set",
    "Parameters that role or database defaults (ALTER ROLE/DATABASE ... SET) set for the vault's database"
    " sessions differently from the vault, read at start (the log names them); the vault pins those that"
    " would change what it does",
)


def observe_database_defaults(count: int) -> None:
    """Note how many parameters role or database defaults set for the vault's sessions."""
    DATABASE_DEFAULTS_SET.set(count)


def observe_checkpoint_exported(checkpoint: object) -> None:
    """Note that an audit checkpoint was signed and exported now."""
    AUDIT_CHECKPOINT_EXPORTED.set_to_current_time()


def observe_planted_checkpoint() -> None:
    """Count one upkeep round that found a planted checkpoint."""
    AUDIT_CHECKPOINT_PLANTED.inc()


def observe_checkpoint_refused() -> None:
    """Count one upkeep round whose checkpoint the database refused to store (exported all the same)."""
    AUDIT_CHECKPOINT_REFUSED.inc()


def observe_id_sequence_tampered() -> None:
    """Count one upkeep round that found a row beyond the audit id sequence, or the sequence altered."""
    AUDIT_ID_SEQUENCE_TAMPERED.inc()


def observe_catalog_check_interrupted(reason: str) -> None:
    """Count one try of the catalog check cancelled or timed out (`reason`: the SQLSTATE's name)."""
    CATALOG_CHECK_INTERRUPTED.labels(reason=reason).inc()


def observe_rows_missing(count: int) -> None:
    """Count audit rows this process appended that a checkpoint round did not find in the chain."""
    AUDIT_ROWS_MISSING.inc(count)


def observe_rows_unchecked(count: int) -> None:
    """Count audit appends refused while rows went unchecked, or rows left unchecked at stop."""
    AUDIT_ROWS_UNCHECKED.inc(count)


def observe_oldest_unchecked(age: Callable[[], float]) -> None:
    """Export `age()` (the oldest unchecked audit row's age, in seconds) at every scrape."""
    AUDIT_OLDEST_UNCHECKED.set_function(age)


def observe_database_unreachable(unreachable: Callable[[], bool]) -> None:
    """Export `unreachable()` (the upkeep's latest round failed for want of a database connection) per scrape."""
    AUDIT_DATABASE_UNREACHABLE.set_function(lambda: float(unreachable()))


def observe_database_login_refused() -> None:
    """Count one audit upkeep round whose database probe (outside the exhausted pool) the server refused."""
    AUDIT_DATABASE_LOGIN_REFUSED.inc()


def observe_audit_lock_holder(ended: bool) -> None:
    """Count one session found holding the audit chain's lock too long, ended or left."""
    AUDIT_LOCK_HOLDERS.labels(ended=str(ended).lower()).inc()


def observe_keys_lock_holder(ended: bool) -> None:
    """Count one session found holding the key-generation lock too long, ended or left."""
    KEYS_LOCK_HOLDERS.labels(ended=str(ended).lower()).inc()


def observe_lock_blocker(ended: bool) -> None:
    """Count one session found keeping a vault session waiting for a lock too long, ended or left."""
    LOCK_BLOCKERS.labels(ended=str(ended).lower()).inc()


def observe_lock_watch_blind(blind: bool) -> None:
    """Note whether the lock watch's latest round could see and end every login of the serving role."""
    LOCK_WATCH_BLIND.set(float(blind))


def observe_upkeep_failed() -> None:
    """Count one audit upkeep round that failed."""
    AUDIT_UPKEEP_FAILED.inc()


def observe_tokenize(client: str, values: int, new_tokens: int) -> None:
    """Count one Tokenize call's values and new tokens for its client."""
    TOKENIZE_VALUES.labels(client).inc(values)
    if new_tokens:
        NEW_TOKENS.labels(client).inc(new_tokens)


def observe_new_tokens_refused(client: str, values: int) -> None:
    """Count values refused new tokens for want of the client's new-token budget."""
    NEW_TOKENS_REFUSED.labels(client).inc(values)


_REVEALED_COUNTERS: dict[str, Any] = {}
"""VALUES_REVEALED's children by client (clients of the policy only: the guard refuses any other)."""


def count_revealed(client: str, values: int) -> None:
    """Count the values one served Detokenize call showed `client` (one increment per call)."""
    if values:
        _revealed_counter(client).inc(values)


def _revealed_counter(client: str) -> Any:
    counter = _REVEALED_COUNTERS.get(client)
    if counter is None:
        counter = _REVEALED_COUNTERS.setdefault(client, VALUES_REVEALED.labels(client))
    return counter


def export_reveal_budgets(policy: AccessPolicy) -> None:
    """Export each revealing client's hourly reveal budget under `policy` (replacing any exported before)."""
    REVEAL_BUDGET_PER_HOUR.clear()
    for client, limit in sorted(policy.limits_of("detokenize").items()):
        if policy.may_detokenize_anything(client):
            REVEAL_BUDGET_PER_HOUR.labels(client).set(limit.per_second * 3600)
            _revealed_counter(client)  # its series at 0 from the start: increase() counts the first call too (R23-6)


_ITEM_COUNTERS: dict[tuple[str, str], Any] = {}
"""ITEMS' children by (method, code): labels() costs 3.3 µs a call (a lock and label checks), a child 0.8."""


def _items_counter(method: str, code: str) -> Any:
    counter = _ITEM_COUNTERS.get((method, code))
    if counter is None:
        counter = _ITEM_COUNTERS.setdefault((method, code), ITEMS.labels(method, code))
    return counter


def count_items(method: str, codes: Iterable[str]) -> None:
    """Count the per-item outcomes of one call."""
    tally: dict[str, int] = {}
    for code in codes:
        tally[code] = tally.get(code, 0) + 1
    for code, count in tally.items():
        _items_counter(method, code).inc(count)


def count_outcomes(method: str, ok: int, failed_codes: Iterable[str]) -> None:
    """Count one call's items: `ok` that succeeded and the code of each that failed (no pass over the successes)."""
    if ok:
        _items_counter(method, "OK").inc(ok)
    if failed_codes:
        count_items(method, failed_codes)


class _VaultCollector(Collector):
    def __init__(self, cache: TokenCache, tokens: PostgresTokenStore) -> None:
        self._cache = cache
        self._tokens = tokens

    def collect(self) -> Iterable[Metric]:
        hits = CounterMetricFamily("tokenvault_token_cache_lookups", "Token cache lookups", labels=["result"])
        hits.add_metric(["hit"], self._cache.hits)
        hits.add_metric(["miss"], self._cache.misses)
        size = GaugeMetricFamily("tokenvault_token_cache_entries", "Tokens held in the cache")
        size.add_metric([], len(self._cache))
        races = CounterMetricFamily(
            "tokenvault_token_insert_races",
            "New values whose token another writer (call or replica) issued first, read back",
        )
        races.add_metric([], self._tokens.races)
        merged = CounterMetricFamily(
            "tokenvault_token_insert_merged_batches",
            "Batches of new tokens whose plain insert met a value issued meanwhile (another replica),"
            " done again with ON CONFLICT DO NOTHING",
        )
        merged.add_metric([], self._tokens.merged_batches)
        replaced = CounterMetricFamily(
            "tokenvault_prepared_statements_replaced",
            "Statements of the vault's prepared-statement names found prepared on its database connections"
            " by something else, and replaced by the vault's own (never run): tampering in the database"
            " session, or a transaction-pooling proxy in front of the database",
        )
        replaced.add_metric([], planted_statements_replaced())
        withheld = CounterMetricFamily(
            "tokenvault_purposes_withheld",
            "Served Detokenize and Erase calls whose audit row keeps no purpose, or only part of it, whatever the"
            " cause (it spelled a value of the call, was not compared with every value, may name a value stored in"
            " the vault - then only that part is withheld -, or may hold a token); no label, so no sample tells which",
        )
        withheld.add_metric([], purposes_withheld())
        undone = CounterMetricFamily(
            "tokenvault_erased_values_present",
            "Tokens of Detokenize, Tokenize and Erase calls whose vault.tokens row was erased (erased_at set) yet"
            " holds a value again: an erasure undone in the database (attack 41, A41-2); refused as DATA_LOSS,"
            " nothing revealed or handed out, each logged with its audit hash; alert: report it to the security team",
        )
        undone.add_metric([], erased_values_present())
        unverified = CounterMetricFamily(
            "tokenvault_erase_rows_unverified",
            "Audit rows read as served erase rows that do not hold in the audit chain (their row hash is not that of"
            " their fields, or the row after them does not link to them): relabelled or planted in the database"
            " (attack 44, A44-3); their tokens are not taken for erased, each logged by its record id; alert"
            " EraseRowUnverified: report it to the security team",
        )
        unverified.add_metric([], erase_rows_unverified())
        window = CounterMetricFamily(
            "tokenvault_erase_read_window_tampered",
            "Reads of the audit log's erase rows that met a head the vault cannot vouch for: a row beyond the audit id"
            " sequence, or the log's newest id below one an earlier read saw (a row planted for the length of a read,"
            " or removed); the read's window does not move there (attack 45, A45-1), logged; alert"
            " EraseReadWindowTampered: report it to the security team",
        )
        window.add_metric([], erase_read_window_tampered())
        catalog = GaugeMetricFamily(
            "tokenvault_database_catalog_findings",
            "Objects the last catalog check found that neither PostgreSQL nor the migrations made (a function in"
            " pg_catalog, a table inheriting from a vault table, row security, a policy or a rule on one), or 1 when"
            " the catalog refused to be read: the database owner's doing, no outage - the replica answers NOT_SERVING"
            " until they are removed; alert VaultCatalogAltered: report it to the security team (walk 47, W47-23)",
        )
        catalog.add_metric([], catalog_findings())
        uncommitted = GaugeMetricFamily(
            "tokenvault_erase_rows_uncommitted",
            "1 while the audit log's erase rows this replica reads are not those a signed audit checkpoint commits"
            " to (an erasure hidden or one faked by relabelling a row's action: attack 46, A46-1/A46-3): the"
            " database owner's doing, no outage - the replica answers NOT_SERVING meanwhile; alert"
            " EraseRowsUncommitted: report it to the security team (review 47, R47-15)",
        )
        uncommitted.add_metric([], erase_rows_uncommitted())
        uncommitted_found = CounterMetricFamily(
            "tokenvault_erase_rows_uncommitted_found",
            "Mismatches between the erase rows and a signed checkpoint's commitment this replica's running checks"
            " found (each once; rows put back clear the gauge, not this count); alert EraseRowsUncommitted",
        )
        uncommitted_found.add_metric([], erase_rows_uncommitted_found())
        heads_changed = CounterMetricFamily(
            "tokenvault_erase_walk_heads_changed",
            "Upkeep rounds whose head row was not the same row when the erase-row walk read it moments later: the"
            " row rewritten in the database meanwhile; the head is signed without an erase-row commitment and the"
            " walk starts again (review 47, R47-13), logged once per head: report it to the security team",
        )
        heads_changed.add_metric([], erase_walk_heads_changed())
        seconds, rows = full_read()
        start_seconds = GaugeMetricFamily(
            "tokenvault_erase_rows_start_read_seconds",
            "Seconds the last read of the audit log's erase rows from its start took (at start-up: the replica serves"
            " nothing before it ends; again after the log's head went back); it grows with every erase row, refused"
            " Erase calls' rows too (review 40, R40-3): keep it well within the start-up probe's budget"
            " (docs/production.md, Start-up time)",
        )
        start_seconds.add_metric([], seconds)
        start_rows = GaugeMetricFamily(
            "tokenvault_erase_rows_start_read_rows",
            "Erase rows (action erase, any outcome) the last read of the audit log's erase rows from its start read",
        )
        start_rows.add_metric([], rows)
        return [
            hits,
            size,
            races,
            merged,
            replaced,
            withheld,
            undone,
            unverified,
            window,
            catalog,
            uncommitted,
            uncommitted_found,
            heads_changed,
            start_seconds,
            start_rows,
            _over_grants(),
        ]


def _over_grants() -> Metric:
    family = CounterMetricFamily(
        "tokenvault_budget_over_grants",
        "Grants of a client's shared budget (vault.take_call_budget) beyond what the policy's rate and burst allow"
        " this process, by client and kind (tokenize, new_tokens, detokenize, erase); only what the policy allows was"
        " served. The database answered more than the policy allows: its budget function or table tampered with, or"
        " replicas running different policies; alert BudgetOverGranted",
        labels=["client", "kind"],
    )
    for (client, kind), count in sorted(over_grants().items()):
        family.add_metric([client, kind], count)
    return family


def register_vault_metrics(cache: TokenCache, tokens: PostgresTokenStore) -> None:
    """Expose the cache's hit and miss counts, insert races and merged batches, replaced statements, over-grants.

    Once per process.
    """
    REGISTRY.register(_VaultCollector(cache, tokens))


Behavior = Callable[[Any, Any, grpc.ServicerContext], Any]


def measured(method: str) -> Callable[[Behavior], Behavior]:
    """Count a servicer method's calls by final status code and time them.

    A decorator rather than a server interceptor: gRPC runs interceptors on every call, health
    checks included; this binds the method's metric children once and touches nothing else.
    """
    latency = LATENCY.labels(method)
    requests_by_code: dict[str, Any] = {}

    def decorate(behavior: Behavior) -> Behavior:
        @functools.wraps(behavior)
        def measured_call(servicer: Any, request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "UNKNOWN"
            try:
                response = behavior(servicer, request, context)
                code = _code_name(context, default="OK")
                return response
            except Exception:
                code = _code_name(context, default="UNKNOWN")  # context.abort() set the code
                raise
            finally:
                counter = requests_by_code.get(code)
                if counter is None:
                    counter = requests_by_code.setdefault(code, REQUESTS.labels(method, code))
                counter.inc()
                latency.observe(time.perf_counter() - started)

        return measured_call

    return decorate


def _code_name(context: grpc.ServicerContext, default: str) -> str:
    code = context.code()  # type: ignore[attr-defined]
    return code.name if isinstance(code, grpc.StatusCode) else default
