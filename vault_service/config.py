"""Vault service configuration, read from the environment and validated at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tokenvault_common.database_dsn import Conninfo, DsnFile, read_dsn_setting
from tokenvault_common.env import EnvReader
from tokenvault_common.metrics_endpoint import MetricsTls, read_metrics_tls
from tokenvault_common.metrics_plaintext import read_allow, read_metrics_plaintext
from tokenvault_common.vault_address import read_vault_address
from vault_service.adapters.postgres.session_settings import SYNCHRONOUS_COMMIT_LEVELS
from vault_service.entrypoints.health_socket import address_problem, unix_socket_path


def read_health_address(read: EnvReader) -> str | None:
    """TOKENVAULT_HEALTH_ADDRESS: a Unix socket, or a TCP address only with TOKENVAULT_HEALTH_TCP=allow.

    On TCP, any network neighbour - a process on the node, a container in the pod, which a
    NetworkPolicy does not hold back - reaches a listener that asks no certificate, and a flood of
    it fails the probes (attack 21, F4): serving it there must be a choice made in writing.
    """
    address = read.optional("TOKENVAULT_HEALTH_ADDRESS")
    tcp_allowed = read_allow(read, "TOKENVAULT_HEALTH_TCP")
    if address is None:
        return None
    if problem := address_problem(address):
        read.problems.append(f"TOKENVAULT_HEALTH_ADDRESS: {problem}")
    elif unix_socket_path(address) is None and not tcp_allowed:
        read.problems.append(
            f"TOKENVAULT_HEALTH_ADDRESS={address} serves health checks without a certificate to whatever reaches"
            " the port, and a flood from a neighbour fails the probes: use unix:/path (a directory only this"
            " service's uid may enter; probe with python -m vault_service.entrypoints.health_probe), or set"
            " TOKENVAULT_HEALTH_TCP=allow to accept that risk"
        )
    return address


@dataclass(frozen=True)
class VaultServiceConfig:
    """Every setting of the vault service."""

    grpc_address: str
    """host:port the gRPC server listens on (TOKENVAULT_GRPC_ADDRESS, default 127.0.0.1:50051; port 0 picks
    a free one)."""
    database_dsn: str
    """Connection string of role tokenvault_vault (TOKENVAULT_DATABASE_DSN); one that may reach the server over TCP (or
    names a service) needs sslmode=verify-full or require_auth=scram-sha-256, else the start stops. Or
    TOKENVAULT_DATABASE_DSN_FILE instead (below)."""
    vault_address: str
    """Vault/OpenBao URL (TOKENVAULT_VAULT_ADDR): https://, or http:// only to a loopback address (the
    secret id, token and data keys in clear travel over it) unless TOKENVAULT_VAULT_PLAINTEXT=allow says
    a private network no one else reaches carries it (docker compose's bridge). Otherwise such an
    address stops the start (exit 2)."""
    vault_token: str | None
    """A Vault token, for development (TOKENVAULT_VAULT_TOKEN)."""
    vault_role_id: str | None
    """AppRole role id (TOKENVAULT_VAULT_ROLE_ID), used with the secret id file."""
    vault_secret_id_file: Path | None
    """File holding the AppRole secret id (TOKENVAULT_VAULT_SECRET_ID_FILE)."""
    kek_name: str
    """Transit key wrapping the data keys (TOKENVAULT_KEK_NAME, default tokenvault)."""
    transit_mount: str
    """Mount path of the Transit engine (TOKENVAULT_TRANSIT_MOUNT, default transit)."""
    audit_signing_key: str
    """Transit ed25519 key that signs audit checkpoints, sign-only for the service
    (TOKENVAULT_AUDIT_SIGNING_KEY, default tokenvault-audit)."""
    tls_cert: Path
    """Server certificate, PEM (TOKENVAULT_TLS_CERT). Not read by the admin command, which serves nothing
    (`from_env(..., serving=False)`: `Path()` when not set; review 32, F6)."""
    tls_key: Path
    """Server private key, PEM (TOKENVAULT_TLS_KEY); like the certificate, not read by the admin command."""
    tls_client_ca: Path
    """CA that issues client certificates (TOKENVAULT_TLS_CLIENT_CA)."""
    tls_client_crl: Path | None
    """The client CA's revocation list, PEM (TOKENVAULT_TLS_CLIENT_CRL; unset: none). Re-read when
    it changes; a certificate it lists is refused with UNAUTHENTICATED."""
    policy_file: Path
    """Access policy, TOML (TOKENVAULT_POLICY_FILE)."""
    metrics_port: int
    """Prometheus metrics port; 0 (the default) disables (TOKENVAULT_METRICS_PORT)."""
    metrics_address: str
    """Address the metrics endpoint binds (TOKENVAULT_METRICS_ADDRESS, default 127.0.0.1)."""
    metrics_tls: MetricsTls | None
    """Metrics over TLS, a client certificate required (TOKENVAULT_METRICS_TLS_CERT,
    TOKENVAULT_METRICS_TLS_KEY, TOKENVAULT_METRICS_TLS_CLIENT_CA: all three or none; the client
    CA signs only the metrics scraper's certificate, never the gRPC clients'). Unset: plain HTTP,
    readable by whatever reaches the port - the counters tell whether a value is in the vault -
    so only on a loopback address, unless TOKENVAULT_METRICS_PLAINTEXT=allow."""
    metrics_plaintext_allowed: bool
    """TOKENVAULT_METRICS_PLAINTEXT=allow: plain-HTTP metrics on a non-loopback address, for a
    deployment whose scraper reaches it over a private network no one else does. Without it such
    an address without TOKENVAULT_METRICS_TLS_* stops the start."""
    health_address: str | None
    """Plaintext listener serving only grpc.health.v1, for probes that present no client certificate
    (TOKENVAULT_HEALTH_ADDRESS; unset: none): `unix:/absolute/path`, a socket in a directory only the
    service's uid may enter (health_socket.py), probed by `python -m vault_service.entrypoints.health_probe`;
    or host:port only with TOKENVAULT_HEALTH_TCP=allow (whoever reaches a TCP port can fail the probes)."""
    workers: int
    """gRPC worker threads (TOKENVAULT_WORKERS, default 16)."""
    db_pool_size: int
    """Database connections (TOKENVAULT_DB_POOL_SIZE, default 8)."""
    log_level: str
    """Logging level (TOKENVAULT_LOG_LEVEL, default INFO); the exported audit checkpoints are logged at any."""
    key_check_seconds: float
    """How often to follow key rotations and check Vault and the database (TOKENVAULT_KEY_CHECK_SECONDS,
    default 15)."""
    token_cache_size: int
    """Tokens kept in memory for repeated values; 0 disables (TOKENVAULT_TOKEN_CACHE_SIZE, default 1000000)."""
    audit_checkpoint_seconds: float = 2.0
    """How often the audit chain is checkpointed and signed while it grows
    (TOKENVAULT_AUDIT_CHECKPOINT_SECONDS, default 2): the window of unanchored rows."""
    audit_unchecked_seconds: float = 60.0
    """How long a row this process appended may wait for an upkeep round's check before appends, so
    reveals, are refused (TOKENVAULT_AUDIT_UNCHECKED_SECONDS, default 30 checkpoint intervals; at
    least 5 of them, so one slow round refuses nothing)."""
    audit_checkpoint_file: Path | None = None
    """Where checkpoints are exported outside Postgres, one JSON line each, besides the log
    (TOKENVAULT_AUDIT_CHECKPOINT_FILE; production: ship it to append-only storage)."""
    audit_report_max_rows: int = 2_500_000
    """The most audit rows a report made in the serving vault (AuditReports) may read
    (TOKENVAULT_AUDIT_REPORT_MAX_ROWS, default 2 500 000): a bound in time, not memory. A report streams
    the log a page at a time (its memory flat whatever the log's length: review 30, R30-1) and pauses
    after each page for the serving calls, verifying ~16 000 rows a second (measured on 2 shared cores),
    so the default is ~160 s of the 300 s a report may take. A larger log is refused before it is read
    (FAILED_PRECONDITION) and verified by the service account's command (which streams it too)."""
    max_calls_per_client: int = 8
    """Calls one client identity (certificate CN) may have in progress at once on this process
    (TOKENVAULT_MAX_CALLS_PER_CLIENT, default half the workers: 8); more are refused with
    RESOURCE_EXHAUSTED, so no client - the ETL with its large Tokenize calls - takes every worker."""
    max_connection_age_seconds: int = 900
    """How long a client connection may live before the client must reconnect with a new TLS
    handshake (TOKENVAULT_MAX_CONNECTION_AGE_SECONDS, 1 to 86400, default 900); see server.py."""
    request_read_seconds: float = 2.0
    """How long a call may take to deliver its request after it is admitted before the server ends it
    (TOKENVAULT_REQUEST_READ_SECONDS, 0.1 to 60, default 2): a call that sends nothing holds a worker."""
    handshake_seconds: float = 5.0
    """How long a new connection may take to finish its TLS handshake before the server closes it
    (TOKENVAULT_HANDSHAKE_SECONDS, 0.5 to 120, default 5): connections that never finish one hold a file
    descriptor each until then (server.py, HANDSHAKE_SECONDS)."""
    db_synchronous_commit: str = "on"
    """The synchronous_commit the vault's database sessions start with (TOKENVAULT_DB_SYNCHRONOUS_COMMIT:
    `on`, the default, or `remote_apply` where the server runs with it; anything weaker stops the
    start: an audit row must be durable before its reveal is served; session_settings.py)."""
    database_dsn_file: DsnFile | None = None
    """A file holding that DSN, read and checked again at every new connection of every pool and session the
    process opens (TOKENVAULT_DATABASE_DSN_FILE, instead of TOKENVAULT_DATABASE_DSN): Kubernetes' login from
    Vault's database secrets engine, rendered again by the Vault agent with a new login as each lease ends (read
    once, every new connection after the old login was dropped failed until the pod restarted; R34-12)."""

    @property
    def database_conninfo(self) -> Conninfo:
        """What every connection of the vault's is opened with: the DSN, or its file read at each new connection."""
        return self.database_dsn_file or self.database_dsn

    @classmethod
    def from_env(cls, env: Mapping[str, str], serving: bool = True) -> VaultServiceConfig:
        """Read and validate; ConfigError lists every problem at once.

        `serving=False` (the admin command: it serves no gRPC) does not require the server's certificate
        and key, so its Job is issued none (review 32, F6); given, they are still checked to be files.
        """
        read = EnvReader(env)
        workers = read.integer("TOKENVAULT_WORKERS", 16, 1, 256)
        metrics_port = read.integer("TOKENVAULT_METRICS_PORT", 0, 0, 65535)
        metrics_address = read.text("TOKENVAULT_METRICS_ADDRESS", "127.0.0.1")
        vault_address = read.text("TOKENVAULT_VAULT_ADDR")
        database_dsn, database_dsn_file = read_dsn_setting(read, env, "TOKENVAULT_DATABASE_DSN")
        read_vault_address(read, "TOKENVAULT_VAULT_ADDR", vault_address)
        config = cls(
            grpc_address=read.text("TOKENVAULT_GRPC_ADDRESS", "127.0.0.1:50051"),
            database_dsn=database_dsn,
            database_dsn_file=database_dsn_file,
            vault_address=vault_address,
            vault_token=read.optional("TOKENVAULT_VAULT_TOKEN"),
            vault_role_id=read.optional("TOKENVAULT_VAULT_ROLE_ID"),
            vault_secret_id_file=read.existing_file("TOKENVAULT_VAULT_SECRET_ID_FILE", required=False),
            kek_name=read.text("TOKENVAULT_KEK_NAME", "tokenvault"),
            transit_mount=read.text("TOKENVAULT_TRANSIT_MOUNT", "transit"),
            audit_signing_key=read.text("TOKENVAULT_AUDIT_SIGNING_KEY", "tokenvault-audit"),
            tls_cert=read.existing_file("TOKENVAULT_TLS_CERT", required=serving) or Path(),
            tls_key=read.existing_file("TOKENVAULT_TLS_KEY", required=serving) or Path(),
            tls_client_ca=read.existing_file("TOKENVAULT_TLS_CLIENT_CA") or Path(),
            tls_client_crl=read.existing_file("TOKENVAULT_TLS_CLIENT_CRL", required=False),
            policy_file=read.existing_file("TOKENVAULT_POLICY_FILE") or Path(),
            metrics_port=metrics_port,
            metrics_address=metrics_address,
            metrics_tls=read_metrics_tls(read, "TOKENVAULT_METRICS", "TOKENVAULT_TLS_CLIENT_CA"),
            metrics_plaintext_allowed=read_metrics_plaintext(read, "TOKENVAULT_METRICS", metrics_port, metrics_address),
            health_address=read_health_address(read),
            workers=workers,
            db_pool_size=read.integer("TOKENVAULT_DB_POOL_SIZE", 8, 1, 128),
            log_level=read.text("TOKENVAULT_LOG_LEVEL", "INFO"),
            key_check_seconds=read.integer("TOKENVAULT_KEY_CHECK_SECONDS", 15, 1, 3600),
            token_cache_size=read.integer("TOKENVAULT_TOKEN_CACHE_SIZE", 1_000_000, 0, 100_000_000),
            audit_checkpoint_seconds=(
                checkpoint_seconds := read.integer("TOKENVAULT_AUDIT_CHECKPOINT_SECONDS", 2, 1, 300)
            ),
            audit_unchecked_seconds=read.integer(
                "TOKENVAULT_AUDIT_UNCHECKED_SECONDS", 30 * checkpoint_seconds, 5 * checkpoint_seconds, 86_400
            ),
            audit_checkpoint_file=Path(p) if (p := read.text("TOKENVAULT_AUDIT_CHECKPOINT_FILE", "")) else None,
            audit_report_max_rows=read.integer("TOKENVAULT_AUDIT_REPORT_MAX_ROWS", 2_500_000, 1, 100_000_000),
            max_calls_per_client=read.integer("TOKENVAULT_MAX_CALLS_PER_CLIENT", max(1, workers // 2), 1, 256),
            max_connection_age_seconds=read.integer("TOKENVAULT_MAX_CONNECTION_AGE_SECONDS", 900, 1, 86_400),
            request_read_seconds=read.number("TOKENVAULT_REQUEST_READ_SECONDS", 2.0, 0.1, 60.0),
            handshake_seconds=read.number("TOKENVAULT_HANDSHAKE_SECONDS", 5.0, 0.5, 120.0),
            db_synchronous_commit=read.text("TOKENVAULT_DB_SYNCHRONOUS_COMMIT", "on").strip().lower(),
        )
        if config.db_synchronous_commit not in SYNCHRONOUS_COMMIT_LEVELS:
            read.problems.append(
                f"TOKENVAULT_DB_SYNCHRONOUS_COMMIT must be one of {' or '.join(SYNCHRONOUS_COMMIT_LEVELS)}, got"
                f" {config.db_synchronous_commit!r}: a weaker level acknowledges audit rows a crash can lose"
                " (set remote_apply where the server runs with it, else on)"
            )
        if config.max_calls_per_client > config.workers:
            read.problems.append(
                f"TOKENVAULT_MAX_CALLS_PER_CLIENT ({config.max_calls_per_client}) is above TOKENVAULT_WORKERS"
                f" ({config.workers}): one client could take every worker; keep it at half the workers or less"
            )
        if not config.vault_token and not (config.vault_role_id and config.vault_secret_id_file):
            read.problems.append(
                "Vault credentials missing: set TOKENVAULT_VAULT_TOKEN, or TOKENVAULT_VAULT_ROLE_ID"
                " and TOKENVAULT_VAULT_SECRET_ID_FILE"
            )
        read.check("vault service")
        return config
