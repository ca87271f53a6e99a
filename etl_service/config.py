"""ETL configuration, read from the environment and validated at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from etl_service.adapters.sqs import endpoint_for_queue
from etl_service.domain.validation import MAX_BODY_BYTES
from etl_service.service.periodic_take_back import DEFAULT_TAKE_BACK_SECONDS
from etl_service.service.sealing import largest_sealable_body_bytes
from tokenvault_common.database_dsn import Conninfo, DsnFile, read_dsn_setting
from tokenvault_common.env import EnvReader
from tokenvault_common.login_row_signatures import MAX_ROWS_PER_LIST
from tokenvault_common.metrics_endpoint import MetricsTls, read_metrics_tls
from tokenvault_common.metrics_plaintext import read_metrics_plaintext
from tokenvault_common.settings_help import settings_help as common_settings_help
from tokenvault_common.vault_address import read_vault_address

DEFAULT_VISIBILITY_SECONDS = 60
"""The lease taken on each received message when ETL_VISIBILITY_TIMEOUT_SECONDS is unset: a message an ETL received
and never deleted (it stopped with it in hand) is invisible that long."""
MIN_VISIBILITY_SECONDS, MAX_VISIBILITY_SECONDS = 2, 43_200
"""The leases ETL_VISIBILITY_TIMEOUT_SECONDS may set (SQS's own bound is 12 hours)."""


@dataclass(frozen=True)
class EtlConfig:
    """Every setting of the ETL service."""

    queue_url: str
    """Source queue URL (ETL_QUEUE_URL)."""
    dlq_url: str
    """Dead-letter queue URL for malformed messages (ETL_DLQ_URL, default `<queue url>-dlq`): the
    target of the source queue's redrive policy, never the source, with no redrive policy of its own
    (checked at start: sqs_common.check_queue_pair)."""
    sqs_endpoint_url: str | None
    """SQS endpoint (ETL_SQS_ENDPOINT_URL); unset: AWS, or the host of a non-AWS queue URL such
    as LocalStack's `http://localhost:4566/000000000000/login-queue`."""
    aws_region: str
    """AWS region (AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1)."""
    aws_access_key_id: str | None
    """Static AWS key id (AWS_ACCESS_KEY_ID); unset to use boto3's chain (profile, IAM role)."""
    aws_secret_access_key: str | None
    """Static AWS secret (AWS_SECRET_ACCESS_KEY), with the key id."""
    database_dsn: str
    """Connection string of role tokenvault_etl (ETL_DATABASE_DSN); one that may reach the server over TCP (or
    names a service) needs sslmode=verify-full or require_auth=scram-sha-256, else the start stops. Or
    ETL_DATABASE_DSN_FILE instead (below)."""
    vault_address: str
    """host:port of the vault service (ETL_VAULT_ADDRESS)."""
    vault_server_name: str | None
    """Expected name in the vault's certificate when it differs from the host (ETL_VAULT_SERVER_NAME)."""
    tls_ca: Path
    """CA of the vault's server certificate (ETL_TLS_CA)."""
    tls_cert: Path
    """The ETL's client certificate (ETL_TLS_CERT)."""
    tls_key: Path
    """The ETL's client key (ETL_TLS_KEY)."""
    batch_size: int
    """Messages per batch (ETL_BATCH_SIZE, 1-1000, default 100)."""
    wait_seconds: int
    """Long-poll wait in service mode (ETL_WAIT_SECONDS, 0-20, default 20)."""
    max_batch_age_seconds: float
    """Flush a partial batch after this long (ETL_MAX_BATCH_AGE_SECONDS, default 2)."""
    receivers: int
    """Concurrent long-polling receivers (ETL_RECEIVERS, 1-64, default 4)."""
    workers: int
    """Batches processed at once (ETL_WORKERS, 1-32, default 2)."""
    max_in_flight: int
    """Most messages held at once; receivers wait beyond it (ETL_MAX_IN_FLIGHT, default 2000)."""
    visibility_seconds: int
    """Lease taken on each received message, extended by the heartbeat while work runs
    (ETL_VISIBILITY_TIMEOUT_SECONDS, 2-43200, default 60)."""
    shutdown_grace_seconds: float
    """After SIGTERM, how long in-flight work may take before what is left is released and the
    process exits (ETL_SHUTDOWN_GRACE_SECONDS, 1-600, default 20; keep it below the platform's
    grace period: Kubernetes' is 60 s here, compose's stop_grace_period 30 s)."""
    max_body_bytes: int
    """Larger bodies are quarantined (ETL_MAX_BODY_BYTES, default 16384; with sealed dead letters at most
    what a sealed envelope fits in one SQS message: 191,879 bytes under the default key, else the start
    stops naming the bound)."""
    device_types: frozenset[str]
    """Accepted device_type values, comma-separated (ETL_DEVICE_TYPES, default android,ios)."""
    dlq_bodies: str
    """What dead letters keep of a message's body (ETL_DLQ_BODIES): `sealed` (default) encrypts it
    with OpenBao/Vault Transit and requires the ETL_DLQ_SEAL_* settings - without them the ETL
    refuses to start, since a message quarantined as processing_failed could not be re-sent;
    `discard` is the explicit opt-out: dead letters keep only the reason and metadata, and a
    good event that failed on every receive cannot be replayed."""
    dlq_seal_vault_addr: str | None
    """OpenBao/Vault that seals dead-letter bodies with Transit (ETL_DLQ_SEAL_VAULT_ADDR; required
    unless ETL_DLQ_BODIES=discard): https://, or http:// only to a loopback address (the secret id,
    token and refused bodies in clear travel over it) unless ETL_DLQ_SEAL_VAULT_PLAINTEXT=allow says
    a private network no one else reaches carries it (docker compose's bridge; also read by
    `dead-letters` for its OpenBao address). Otherwise such an address stops the start (exit 2)."""
    dlq_seal_role_id: str | None
    """The ETL's own AppRole, allowed only to encrypt and rewrap with the dead-letter key (rewrap proves
    a dead letter moved back to the source queue genuine, revealing no plaintext) (ETL_DLQ_SEAL_ROLE_ID;
    required with ETL_DLQ_SEAL_VAULT_ADDR)."""
    dlq_seal_secret_id_file: Path | None
    """File holding that AppRole's secret id (ETL_DLQ_SEAL_SECRET_ID_FILE; required with the address)."""
    dlq_seal_key: str
    """Transit key that seals dead-letter bodies (ETL_DLQ_SEAL_KEY, default tokenvault-dead-letters)."""
    metrics_port: int
    """Prometheus metrics port; 0 disables (ETL_METRICS_PORT)."""
    metrics_address: str
    """Address the metrics port binds (ETL_METRICS_ADDRESS, default 127.0.0.1)."""
    metrics_tls: MetricsTls | None
    """Metrics over TLS, a client certificate required (ETL_METRICS_TLS_CERT, ETL_METRICS_TLS_KEY,
    ETL_METRICS_TLS_CLIENT_CA: all three or none; the client CA signs only the metrics scraper's
    certificate, never the gRPC clients'). Unset: plain HTTP, so only on a loopback address unless
    ETL_METRICS_PLAINTEXT=allow (the counters tell whether a value is in the vault)."""
    metrics_plaintext_allowed: bool
    """ETL_METRICS_PLAINTEXT=allow: plain-HTTP metrics on a non-loopback address, for a deployment
    whose scraper reaches it over a private network no one else does. Without it such an address
    without ETL_METRICS_TLS_* stops the start."""
    health_address: str | None
    """host:port (an IPv6 address in brackets: [::1]:8086) of a plain HTTP endpoint answering GET
    /healthz with 200 while the process runs, and nothing else: for probes and health checks that
    hold no scraper certificate (ETL_HEALTH_ADDRESS; unset: none)."""
    log_level: str
    """Logging level (ETL_LOG_LEVEL)."""
    take_back_seconds: float = DEFAULT_TAKE_BACK_SECONDS
    """Run mode: how often messages SQS's redrive policy moved to the DLQ (in clear, no reason) are taken
    back to the source queue (ETL_TAKE_BACK_SECONDS, 0-86400, default 300; 0: never, as before 4 Dec)."""
    database_dsn_file: DsnFile | None = None
    """A file holding that DSN, read and checked again at every new connection (its pool's, its start check's;
    ETL_DATABASE_DSN_FILE, instead of ETL_DATABASE_DSN): Kubernetes' login from Vault's database secrets engine,
    rendered again by the Vault agent with a new login as each lease ends (read once, every new connection after
    the old login was dropped failed until the pod restarted; R34-12)."""

    @property
    def database_conninfo(self) -> Conninfo:
        """What the ETL's connections are opened with: the DSN, or its file read at each new connection."""
        return self.database_dsn_file or self.database_dsn

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EtlConfig:
        """Read and validate; ConfigError lists every problem at once."""
        read = EnvReader(env)
        queue_url = read.text("ETL_QUEUE_URL")
        batch_size = read.integer("ETL_BATCH_SIZE", 100, 1, MAX_ROWS_PER_LIST)  # a signed list's bound (A48-2)
        dlq_bodies = read.text("ETL_DLQ_BODIES", SEALED)
        seal_addr = _sealing_address(read, dlq_bodies)
        read_vault_address(read, "ETL_DLQ_SEAL_VAULT_ADDR", seal_addr)
        metrics_port = read.integer("ETL_METRICS_PORT", 0, 0, 65535)
        metrics_address = read.text("ETL_METRICS_ADDRESS", "127.0.0.1")
        database_dsn, database_dsn_file = read_dsn_setting(read, env, "ETL_DATABASE_DSN")
        config = cls(
            queue_url=queue_url,
            dlq_url=read.text("ETL_DLQ_URL", f"{queue_url}-dlq"),
            sqs_endpoint_url=read.optional("ETL_SQS_ENDPOINT_URL") or endpoint_for_queue(queue_url),
            aws_region=read.text("AWS_REGION", env.get("AWS_DEFAULT_REGION", "us-east-1")),
            aws_access_key_id=read.optional("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=read.optional("AWS_SECRET_ACCESS_KEY"),
            database_dsn=database_dsn,
            database_dsn_file=database_dsn_file,
            vault_address=read.text("ETL_VAULT_ADDRESS"),
            vault_server_name=read.optional("ETL_VAULT_SERVER_NAME"),
            tls_ca=read.existing_file("ETL_TLS_CA") or Path(),
            tls_cert=read.existing_file("ETL_TLS_CERT") or Path(),
            tls_key=read.existing_file("ETL_TLS_KEY") or Path(),
            batch_size=batch_size,
            wait_seconds=read.integer("ETL_WAIT_SECONDS", 20, 0, 20),
            max_batch_age_seconds=read.number("ETL_MAX_BATCH_AGE_SECONDS", 2.0, 0.0, 60.0),
            receivers=read.integer("ETL_RECEIVERS", 4, 1, 64),
            workers=read.integer("ETL_WORKERS", 2, 1, 32),
            max_in_flight=read.integer("ETL_MAX_IN_FLIGHT", 2000, batch_size, 100_000),
            visibility_seconds=read.integer(
                "ETL_VISIBILITY_TIMEOUT_SECONDS",
                DEFAULT_VISIBILITY_SECONDS,
                MIN_VISIBILITY_SECONDS,
                MAX_VISIBILITY_SECONDS,
            ),
            shutdown_grace_seconds=read.number("ETL_SHUTDOWN_GRACE_SECONDS", 20.0, 1.0, 600.0),
            take_back_seconds=read.number("ETL_TAKE_BACK_SECONDS", DEFAULT_TAKE_BACK_SECONDS, 0.0, 86_400.0),
            max_body_bytes=read.integer("ETL_MAX_BODY_BYTES", MAX_BODY_BYTES, 256, 262_144),
            device_types=frozenset(
                t.strip().lower() for t in read.text("ETL_DEVICE_TYPES", "android,ios").split(",") if t.strip()
            ),
            dlq_bodies=dlq_bodies,
            dlq_seal_vault_addr=seal_addr,
            dlq_seal_role_id=read.text("ETL_DLQ_SEAL_ROLE_ID") if seal_addr else None,
            dlq_seal_secret_id_file=read.existing_file("ETL_DLQ_SEAL_SECRET_ID_FILE") if seal_addr else None,
            dlq_seal_key=read.text("ETL_DLQ_SEAL_KEY", "tokenvault-dead-letters"),
            metrics_port=metrics_port,
            metrics_address=metrics_address,
            metrics_tls=read_metrics_tls(read, "ETL_METRICS", "ETL_TLS_CA"),
            metrics_plaintext_allowed=read_metrics_plaintext(read, "ETL_METRICS", metrics_port, metrics_address),
            health_address=read.optional("ETL_HEALTH_ADDRESS"),
            log_level=read.text("ETL_LOG_LEVEL", "INFO"),
        )
        _check_sealable_body_size(read, config)
        read.check("etl service")
        return config


SEALED, DISCARD = "sealed", "discard"


def _sealing_address(read: EnvReader, dlq_bodies: str) -> str | None:
    """ETL_DLQ_SEAL_VAULT_ADDR, which ETL_DLQ_BODIES=sealed requires and =discard excludes."""
    address = read.optional("ETL_DLQ_SEAL_VAULT_ADDR")
    if dlq_bodies == SEALED and not address:
        read.problems.append(
            "ETL_DLQ_SEAL_VAULT_ADDR is required (with ETL_DLQ_SEAL_ROLE_ID and ETL_DLQ_SEAL_SECRET_ID_FILE):"
            " dead letters keep their bodies sealed, so a message quarantined as processing_failed can be"
            " re-sent; to run without, losing those bodies, set ETL_DLQ_BODIES=discard"
        )
    elif dlq_bodies == DISCARD and address:
        read.problems.append("ETL_DLQ_BODIES=discard contradicts ETL_DLQ_SEAL_VAULT_ADDR: unset one of them")
    elif dlq_bodies not in (SEALED, DISCARD):
        read.problems.append(f"ETL_DLQ_BODIES must be {SEALED} or {DISCARD}, got {dlq_bodies!r}")
    return address


def _check_sealable_body_size(read: EnvReader, config: EtlConfig) -> None:
    """A sealing ETL refuses an ETL_MAX_BODY_BYTES whose sealed envelope could not fit an SQS message.

    SQS refuses a message over 256 KiB, attributes included: a body the ETL accepts as not too large
    but cannot dead-letter sealed would lose its body (sealing.largest_sealable_body_bytes).
    """
    largest = largest_sealable_body_bytes(config.dlq_seal_key)
    if config.dlq_bodies == SEALED and config.max_body_bytes > largest:
        read.problems.append(
            f"ETL_MAX_BODY_BYTES must be at most {largest} while dead letters keep their bodies sealed: a"
            f" larger body's sealed envelope (base64, with Transit's nonce and tag, and the attributes) would"
            f" exceed SQS's 256 KiB message limit"
        )


def settings_help() -> str:
    """Every setting, from the field docstrings above (one source for the code and `--help`)."""
    return common_settings_help(Path(__file__), "EtlConfig")
