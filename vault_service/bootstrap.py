"""Wires the real adapters into a TokenVault (the composition root)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import Connection
from psycopg_pool import ConnectionPool

from tokenvault_common.database_dsn import Conninfo
from tokenvault_common.pg_options import startup_options
from tokenvault_common.pg_pool import LoginCheck
from vault_service.adapters.postgres import PostgresAuditLog, PostgresKeyStore, PostgresTokenStore
from vault_service.adapters.postgres.catalog_additions import PostgresCatalogAdditions
from vault_service.adapters.postgres.chain_lock import (
    BLOCKED_A_VAULT_SESSION,
    DATA_KEY_ROWS,
    PROCESS_SESSIONS,
    ChainLockHolder,
    ChainLockWatch,
)
from vault_service.adapters.postgres.key_job_liveness import PostgresJobLiveness
from vault_service.adapters.postgres.keys import KEYS_LOCK
from vault_service.adapters.postgres.schema_catalog import PostgresVaultSchema
from vault_service.adapters.postgres.session_settings import (
    PINNED_SETTINGS,
    defaults_set_for_session,
    session_settings_with,
)
from vault_service.adapters.postgres.session_settings import (
    VAULT_SESSION_OPTIONS as VAULT_SESSION_OPTIONS,  # re-exported
)
from vault_service.adapters.transit import (
    SignatureVerifier,
    TransitKeyWrapper,
    TransitSigner,
    VaultStartupError,
    open_session,
    verify_signature,
)
from vault_service.config import VaultServiceConfig
from vault_service.domain.anchoring import AppendedRows
from vault_service.domain.checkpoints import Checkpoint
from vault_service.domain.identity import Caller
from vault_service.domain.pending_rows import PendingNote
from vault_service.domain.policy import load_policy
from vault_service.entrypoints.metrics import (
    export_reveal_budgets,
    observe_audit_lock_holder,
    observe_catalog_check_interrupted,
    observe_checkpoint_exported,
    observe_checkpoint_refused,
    observe_database_defaults,
    observe_database_login_refused,
    observe_database_unreachable,
    observe_id_sequence_tampered,
    observe_keys_lock_holder,
    observe_lock_blocker,
    observe_lock_watch_blind,
    observe_new_tokens_refused,
    observe_oldest_unchecked,
    observe_planted_checkpoint,
    observe_rows_missing,
    observe_rows_unchecked,
    observe_tokenize,
    observe_upkeep_failed,
)
from vault_service.service.audit_upkeep import DEFAULT_INTERVAL, AuditUpkeep
from vault_service.service.audit_verify import DEFAULT_COPY_LAG, FullAuditReport, verify_audit_and_erasures
from vault_service.service.checkpoint_export import checkpoint_exporter, pending_exporter
from vault_service.service.erase_commitment_check import EraseCommitmentCheck
from vault_service.service.exported_copy import ExportedCopy
from vault_service.service.keyring import KeyManager
from vault_service.service.maintenance import HealthReport, KeyMaintainer
from vault_service.service.metering import TokenizeMeter
from vault_service.service.own_rows_round import OwnRowsRound, anchor_own_rows
from vault_service.service.ports import JobLiveness
from vault_service.service.rotation import KeyRotation
from vault_service.service.token_cache import TokenCache
from vault_service.service.vault import TokenVault

log = logging.getLogger(__name__)


@dataclass
class Bootstrapped:
    """The wired vault and the resources to close at shutdown."""

    vault: TokenVault
    keys: KeyManager
    pool: ConnectionPool
    key_store: PostgresKeyStore
    token_store: PostgresTokenStore
    audit: PostgresAuditLog
    wrapper: TransitKeyWrapper
    signer: TransitSigner
    """Signs audit checkpoints with the Transit signing key (sign-only for the service)."""

    def verify_audit_fully(
        self,
        exported: Path | None,
        max_copy_lag: float = DEFAULT_COPY_LAG,
        keep: frozenset[bytes] | None = None,
        sent: ExportedCopy | None = None,
    ) -> FullAuditReport:
        """audit-verify's report: chain, checkpoints (and `exported`, when given), erasures and audit keys.

        `max_copy_lag`: seconds the exported copy's newest checkpoint may be older than the database's.
        `keep`: the keyed token hashes whose records the report keeps (None: every record; see `verify_audit`).
        `sent`: another copy already read, verified against together with `exported` (`verify_audit`).
        """
        return verify_audit_and_erasures(
            self.audit,
            self.token_store,
            self.keys.ring.audit_keys,
            self.signer.public_keys(),
            verify_signature,
            exported,
            max_copy_lag,
            sent=sent,
            keep=keep,
            schema=PostgresVaultSchema(self.pool),
        )

    def audit_upkeep(
        self, interval: float, checkpoint_file: Path | None, unchecked_seconds: float | None = None
    ) -> AuditUpkeep:
        """The background writer of aggregated audit rows and signed checkpoints.

        From now on appends are refused once a row this process appended has waited `unchecked_seconds`
        (default 30 intervals) for its check (domain/anchoring.py `AppendedRows`).
        """
        self.audit.appended.max_age = unchecked_seconds if unchecked_seconds is not None else 30 * interval
        self.audit.appended.warn_age = 3 * interval  # the unchecked ids are logged before a kill can erase them
        self.audit.upkeep_statement_timeout = 5 * interval  # a statement made to wait fails the round (counted)
        observe_oldest_unchecked(self.audit.appended.oldest_age)
        appended = self.audit.appended
        observe_database_unreachable(lambda: appended.database_unreachable)
        return self._upkeep(
            interval,
            checkpoint_exporter(checkpoint_file),
            pending_exporter(checkpoint_file),
            chain_lock_watch(self.pool),
            commit_erasures=True,
        )

    def anchor_own_rows(self, checkpoint_file: Path | None, create: bool = False) -> OwnRowsRound:
        """One upkeep round over the audit rows this process appended, before it exits (the admin commands').

        Each checkpoint it exports goes to `checkpoint_file` when that exists (never created here:
        retest 17, finding B) and, as its `audit checkpoint` JSON log line (logged at any level),
        to standard error: an admin process's log lines reach no log pipeline, so the operator's
        terminal keeps that copy (attack 17, finding 4). `create`: the service's own key jobs (KeyJobs) create
        the file as the service's upkeep does; an admin process never does.
        """
        self.audit.upkeep_statement_timeout = 5 * DEFAULT_INTERVAL  # as the service's rounds: bounded
        export = checkpoint_exporter(checkpoint_file, create=create)

        note = pending_exporter(checkpoint_file, create=create)  # its log line reaches standard error too

        def upkeep_exporting_to(also: Callable[[Checkpoint], None]) -> AuditUpkeep:
            def export_and_tell(checkpoint: Checkpoint) -> None:
                export(checkpoint)
                also(checkpoint)

            return self._upkeep(DEFAULT_INTERVAL, export_and_tell, note)

        return anchor_own_rows(self.audit.appended, upkeep_exporting_to)

    def _upkeep(
        self,
        interval: float,
        export: Callable[[Checkpoint], None],
        note: Callable[[PendingNote], None],
        before_round: Callable[[], None] | None = None,
        commit_erasures: bool = False,
    ) -> AuditUpkeep:
        """The audit upkeep of this process's rows, exporting each checkpoint through `export`.

        Each round first exports, through `note`, a note of the rows appended and not yet anchored
        (retest 17, finding A). `commit_erasures`: the service's upkeep signs each head with its commitment to
        the erase rows (attack 46, A46-3); an admin command's one round signs v1 checkpoints as before.
        """
        verify = SignatureVerifier(self.signer)
        erased = self.vault.erased

        def exported(checkpoint: Checkpoint) -> None:
            observe_checkpoint_exported(checkpoint)
            erased.anchored(checkpoint.head.head_id)  # the erase rows' read starts no further (attack 45, A45-1)

        return AuditUpkeep(
            self.audit,
            self.audit,
            self.signer,
            self.vault.meter,
            self.vault.refusals,
            export,
            interval,
            on_exported=exported,
            on_planted=observe_planted_checkpoint,
            genuine=_genuine(verify),
            on_sequence_tampered=observe_id_sequence_tampered,
            on_failed=observe_upkeep_failed,
            on_refused=observe_checkpoint_refused,
            appended=self.audit.appended,
            on_rows_missing=observe_rows_missing,
            on_rows_unchecked=observe_rows_unchecked,
            note_pending=note,
            on_probe_refused=observe_database_login_refused,
            before_round=before_round,
            commit_erasures=commit_erasures,
        )

    def maintainer(self, report: HealthReport, interval: float) -> KeyMaintainer:
        """The background key/health upkeep for this vault."""
        return KeyMaintainer(
            self.keys,
            self.token_store,
            self.vault.cache,
            report,
            interval,
            self.vault.erased,
            # at start and each round: attack 45, A45-3/A45-4; its cancelled tries counted (A48-1)
            PostgresCatalogAdditions(self.pool, observe_catalog_check_interrupted),
            EraseCommitmentCheck(  # attack 46, A46-3; a planted checkpoint passed over, counted (R47-6)
                self.audit, _genuine(SignatureVerifier(self.signer)), observe_planted_checkpoint
            ),
        )

    def rotation(
        self,
        actor: str | Caller,
        before_work: Callable[[], None] | None = None,
        liveness: JobLiveness | None = None,
    ) -> KeyRotation:
        """The administrative key operations, audited as `actor`; `before_work` gates each after its intent row.

        `liveness` (`job_liveness`): each operation holds its intent row while it runs, `status` reports the
        interrupted ones and the next operation closes them (attack 26, F5); release it after the last one.
        """
        keys, store, wrapper, tokens, audit = self.keys, self.key_store, self.wrapper, self.token_store, self.audit
        if before_work is None and liveness is None:
            return KeyRotation(keys, store, wrapper, tokens, audit, actor)
        return KeyRotation(keys, store, wrapper, tokens, audit, actor, before_work or _no_gate, liveness)

    def close(self) -> None:
        """Release the database connections."""
        self.pool.close()


def chain_lock_watch(pool: ConnectionPool) -> Callable[[], None]:
    """One audit upkeep's step ending sessions that hold the audit chain's or the key-generation lock for seconds.

    Attack 26, F2; attack 27, F2/F3; and the sessions that keep the vault's waiting for any lock (review 31,
    R31-2/R31-6). Counted per lock.
    """
    watch = ChainLockWatch(pool)

    def count(holder: ChainLockHolder) -> None:
        observe_lock_blocker(holder.ended)

    # What keeps an append waiting 1 s for the chain's lock, looked for every 0.25 s (review 33, R33-1); the thread
    # ends when the pool is closed.
    threading.Thread(target=watch.watch_chain_waits, args=(count,), name="chain-lock-waits", daemon=True).start()

    def end_stale_holders() -> None:
        for holder in watch.end_stale_holders():
            if holder.lock == BLOCKED_A_VAULT_SESSION:
                observe_lock_blocker(holder.ended)
            elif holder.lock in (KEYS_LOCK, DATA_KEY_ROWS):
                observe_keys_lock_holder(holder.ended)
            else:
                observe_audit_lock_holder(holder.ended)
        observe_lock_watch_blind(watch.blind is not None)

    return end_stale_holders


def open_vault_pool(
    dsn: Conninfo,
    max_size: int,
    settings: dict[str, str] = PINNED_SETTINGS,
    configure: Callable[[Connection[Any]], None] | None = None,
) -> ConnectionPool:
    """An open pool of autocommit connections to the vault schema, as the adapters expect.

    `dsn`: the DSN, or a DsnFile (TOKENVAULT_DATABASE_DSN_FILE), which the pool reads again for every connection it
    opens (psycopg_pool calls a callable conninfo each time): a rotated login is used from its next connection on.

    `configure(conn)` is called with each new connection (an audit report's watch keeps them to
    cancel their statement when the report's call ends). Each is noted first as one of this process's
    sessions, which the lock watch never ends (chain_lock.PROCESS_SESSIONS).

    Each connection starts with `settings` (libpq `options`; `session_settings_with` for the
    configured synchronous_commit).

    Each connection must be a PostgreSQL session of its own for its whole life: no transaction-
    or statement-mode pooling proxy in front of the database (docs/production.md). The hot-path
    statements are prepared under fixed names (adapters/postgres/prepared.py) and psycopg
    prepares statements run five times as `_pg3_<n>`; in a session of the vault's own a name
    prepared by something else is replaced (ours) or makes psycopg's prepare fail (theirs), never
    run, so psycopg's automatic prepares are kept (`prepare_threshold` left at its default).
    """
    check = LoginCheck(dsn)  # a Postgres restart leaves dead connections behind; Vault a dropped login's (R36-4)
    pool = ConnectionPool(
        dsn,
        min_size=1,
        max_size=max_size,
        open=False,
        name="vault",
        check=check,
        configure=_noted(configure),
        timeout=10,
        # Single statements commit alone; multi-statement work uses explicit transactions.
        # The startup options pin what a role or database default could otherwise change
        # (session_settings.py: durable audit commits, read committed, a fixed search path).
        # No parallel workers: the vault's statements are index probes of a few thousand rows,
        # and a parallel plan only appears when the planner misjudges a growing table. Set at
        # connection start, since database users made by Vault's secrets engine (IN ROLE
        # tokenvault_vault) do not inherit the role's own settings.
        # Generic plans: the vault's statements are prepared and take arrays, whose size a
        # custom plan counts; Postgres then judged the generic plan dearer than a custom one
        # for a one-token Detokenize and planned it again on every call (74 against 38 µs of
        # its CPU per fetch). It applies to every statement with parameters on these
        # connections, so each is written to have one good plan whatever its values (index
        # probes; the key jobs' batches ordered by their work-list index), and
        # tests/integration/test_vault_at_scale.py checks the generic plans.
        kwargs={
            "application_name": "tokenvault-vault",
            "autocommit": True,
            "options": startup_options(settings),
        },
    )
    check.attach(pool)
    pool.open(wait=True, timeout=15)
    return pool


def _noted(configure: Callable[[Connection[Any]], None] | None) -> Callable[[Connection[Any]], None]:
    """A pool's `configure`: note the session as this process's (the lock watch never ends it), then `configure`."""

    def note(conn: Connection[Any]) -> None:
        PROCESS_SESSIONS.note(conn)
        if configure is not None:
            configure(conn)

    return note


def check_session_settings(pool: ConnectionPool, pinned: dict[str, str] = PINNED_SETTINGS) -> None:
    """Warn about role or database defaults set for the vault's sessions; refuse a session not as pinned.

    The warning names the parameters only (never values) and the count is exposed
    (`tokenvault_database_defaults_set`, alert `DatabaseDefaultsSetForVault`): the serving role
    may set its own defaults, and one of them turned audit commits asynchronous (insider round 15,
    finding 3). A session whose pinned settings are not in effect (a proxy that drops startup
    options) is refused: VaultStartupError.
    """
    with pool.connection() as conn:
        report = defaults_set_for_session(conn, pinned)
    observe_database_defaults(report.defaults_set)
    if report.defaults_set:
        log.warning(
            "role or database defaults are set for the vault's database sessions (ALTER ROLE/DATABASE ... SET):"
            " the pinned ones are overridden by its startup options, the others are in effect",
            extra={"overridden": list(report.overridden), "in_effect": list(report.in_effect)},
        )
    if report.not_pinned:
        raise VaultStartupError(
            "the vault's database sessions do not run with the settings they start with"
            f" ({', '.join(report.not_pinned)}): a proxy in front of the database that drops startup options"
            " (PgBouncer's ignore_startup_parameters = options)? Connect directly or pass the options through"
            " (docs/production.md, release order)"
        )


KEY_JOB_CONNECTIONS = 2
"""Database connections of a key job's own pool (KeyJobs): its batches never take the serving pool's."""


def _genuine(verify: Callable[[bytes, str], bool]) -> Callable[[Checkpoint], bool]:
    """Whether a stored checkpoint's signature holds over its message (v1, or v2 with its erase-row commitment)."""
    return lambda checkpoint: verify(checkpoint.head.message(), checkpoint.signature)


def _no_gate() -> None:
    return None


def job_liveness(config: VaultServiceConfig) -> PostgresJobLiveness:
    """Which key operations have a live process (adapters/postgres/key_job_liveness.py), for one job's session."""
    return PostgresJobLiveness(
        config.database_conninfo, startup_options(session_settings_with(config.db_synchronous_commit))
    )


def key_job_wiring(wired: Bootstrapped, config: VaultServiceConfig) -> Bootstrapped:
    """The stores, keys and audit log of one key job run by the service (KeyJobs), on a pool of its own.

    The job opens and re-seals every value with the service's own Vault session (`wired`'s wrapper
    and signer: no second login), but on KEY_JOB_CONNECTIONS connections of its own, with a key ring
    and an audit log of its own: the serving calls keep the service's pool, and the job's audit rows
    are remembered apart, so its rounds (`anchor_own_rows`) check exactly its rows, as the admin
    command's did. Close it with `close()`.
    """
    settings = session_settings_with(config.db_synchronous_commit)
    pool = open_vault_pool(config.database_conninfo, KEY_JOB_CONNECTIONS, settings)
    try:
        key_store = PostgresKeyStore(pool, config.kek_name)
        audit = PostgresAuditLog(pool, AppendedRows(on_refused=observe_rows_unchecked))
        token_store = PostgresTokenStore(pool, audit.appended)
        keys = KeyManager(key_store, wired.wrapper)
        keys.start()
        vault = TokenVault(token_store, keys, load_policy(config.policy_file), audit, TokenCache(0), TokenizeMeter())
    except BaseException:
        pool.close()
        raise
    return Bootstrapped(vault, keys, pool, key_store, token_store, audit, wired.wrapper, wired.signer)


def bootstrap(config: VaultServiceConfig, *, report: bool = False) -> Bootstrapped:
    """Connect to Vault (checking every permission) and Postgres, load keys and policy.

    `report`: for the report commands (`audit verify`, `who-saw`), whose sessions read the chain past an owner's
    row-level security policy to name it; every other session (serving, upkeep, key jobs, admin) runs with
    `row_security = off`, so such a policy fails its statements instead of filtering them (attack 46, A46-2;
    session_settings.py).

    Raises VaultStartupError, KeysUnavailable or PoolTimeout with a message naming the cause.
    """
    policy = load_policy(config.policy_file)
    export_reveal_budgets(policy)  # what RevealVolumeHigh compares each client's reveals with
    # The session renews its token and logs in again before it expires (see vault_session.py).
    session = open_session(config.vault_address, config.vault_token, config.vault_role_id, config.vault_secret_id_file)
    wrapper = TransitKeyWrapper(session, config.kek_name, config.transit_mount)
    wrapper.check_access()
    signer = TransitSigner(session, config.audit_signing_key, config.transit_mount)
    signer.check_access()
    settings = session_settings_with(config.db_synchronous_commit, report=report)
    pool = open_vault_pool(config.database_conninfo, config.db_pool_size, settings)
    try:
        check_session_settings(pool, settings)
        key_store = PostgresKeyStore(pool, config.kek_name)
        audit = PostgresAuditLog(pool, AppendedRows(on_refused=observe_rows_unchecked))
        token_store = PostgresTokenStore(pool, audit.appended)  # erase rows are anchored as appends are
        keys = KeyManager(key_store, wrapper)
        keys.start()
        meter = TokenizeMeter(observe_tokenize, observe_new_tokens_refused)
        vault = TokenVault(token_store, keys, policy, audit, TokenCache(config.token_cache_size), meter)
    except BaseException:
        pool.close()
        raise
    return Bootstrapped(vault, keys, pool, key_store, token_store, audit, wrapper, signer)
