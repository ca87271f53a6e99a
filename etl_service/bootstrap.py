"""Wires the real adapters into a Consumer (the composition root)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from psycopg_pool import ConnectionPool

from etl_service.adapters.postgres import PostgresLoginStore
from etl_service.adapters.sqs import SqsQueue, make_sqs_client
from etl_service.adapters.transit_sealer import TransitSealer
from etl_service.adapters.vault_client import GrpcTokenizer
from etl_service.adapters.vault_tls_probe import VaultTls
from etl_service.config import EtlConfig
from etl_service.errors import EtlError, Misconfigured
from etl_service.service.batch import BatchProcessor
from etl_service.service.consumer import Consumer, ConsumerSettings, ledger_for
from etl_service.service.gate import DependencyGate
from etl_service.service.outcomes import ConsumerObserver, NoObserver
from etl_service.service.ports import Queue
from etl_service.service.sealing import DiscardBodies
from tokenvault_client.channel import ClientIdentity, open_channel
from tokenvault_common.database_dsn import Conninfo
from tokenvault_common.pg_pool import LoginCheck

log = logging.getLogger(__name__)


@dataclass
class Wired:
    """The consumer and the resources to close at shutdown."""

    consumer: Consumer
    queue: Queue
    processor: BatchProcessor
    tokenizer: GrpcTokenizer
    store: PostgresLoginStore
    pool: ConnectionPool
    channel: grpc.Channel

    database_dsn: Conninfo = ""
    """What the start check connects with (EtlConfig.database_conninfo: a DSN file is read again)."""
    sealer: TransitSealer | DiscardBodies | None = None

    def close(self) -> None:
        """Release connections (bounded: a hung database does not hold the exit)."""
        self.channel.close()
        self.pool.close(timeout=2)

    def check_dependencies(self) -> None:
        """Start-up checks, before the first receive: Misconfigured naming the first problem.

        The queues were checked by bootstrap; here the database (login, privileges) and the
        vault (handshake, identity, permission to tokenize). A dependency that does not answer
        at start is reported the same way: the process exits 1 and its supervisor retries.
        """

        def database() -> None:
            self.store.check_access(self.database_dsn)

        checks: tuple[tuple[str, Callable[[], None]], ...] = (
            ("Postgres", database),
            ("vault service", self.tokenizer.check_access),
        )
        if isinstance(self.sealer, TransitSealer):
            checks += (("OpenBao (dead-letter sealing, row signing)", self.sealer.check_access),)
        for name, check in checks:
            try:
                check()
            except Misconfigured:
                raise
            except EtlError as error:
                raise Misconfigured(
                    f"{name} does not answer at start: {error}{_hint(error)}", error.dependency
                ) from None


def bootstrap(
    config: EtlConfig,
    wait_seconds: int | None = None,
    observer: ConsumerObserver | None = None,
    queue: Queue | None = None,
) -> Wired:
    """Build the consumer from real SQS, vault service and Postgres adapters.

    `queue` replaces SQS (benchmarks feed the core path from memory). Raises
    QueueConfigurationError when a queue is missing or refused (nothing to retry).
    """
    observer = observer or NoObserver()
    max_receive_count = None
    sealer = _sealer(config)
    if queue is None:
        client = make_sqs_client(
            config.sqs_endpoint_url, config.aws_region, config.aws_access_key_id, config.aws_secret_access_key
        )
        # A take-back proves sealed dead letters with Transit and tags the times it sends back, and a
        # re-sent letter's time is checked there; a discarding ETL can do none of it (own_dead_letters,
        # take_back_times, sqs_resent_times).
        prover = sealer if isinstance(sealer, TransitSealer) else None
        tagger = prover.tag_take_back_times if prover else None
        sqs = SqsQueue(
            client, config.queue_url, config.dlq_url, config.visibility_seconds, prover, prover, sealer, tagger
        )
        sqs.check()
        max_receive_count = sqs.redrive_limit  # read again where a message's fate depends on it
        queue = sqs
    tls = VaultTls(  # read once: the channel presents these bytes, and a refused handshake is asked with them
        config.vault_address,
        config.tls_ca.read_bytes(),
        config.tls_cert.read_bytes(),
        config.tls_key.read_bytes(),
        config.vault_server_name,
    )
    identity = ClientIdentity(
        config.tls_ca, config.tls_cert, config.tls_key, tls.server_name, tls.ca_pem, tls.cert_pem, tls.key_pem
    )
    channel = open_channel(config.vault_address, identity, transparent_retry=True)  # as secure_channel
    check = LoginCheck(config.database_conninfo)  # dead connections, and a dropped login's (review 36, R36-4)
    pool = check.attach(
        ConnectionPool(
            config.database_conninfo,  # a DSN file: psycopg_pool calls it for every connection (its rotated login)
            min_size=1,
            max_size=config.workers + 1,
            open=False,
            name="etl",
            check=check,
            kwargs={"application_name": "tokenvault-etl"},
        )
    )
    pool.open(wait=False)
    stopping = threading.Event()  # Consumer.stop sets it: waits for the vault's quota or a pooled connection end
    tokenizer, store = (
        GrpcTokenizer(channel, stopping=stopping, tls=tls),
        PostgresLoginStore(pool, config.database_conninfo, stopping),
    )
    # The rows it loads are signed with the same OpenBao login (attack 41, A41-1); a discarding ETL has none.
    signer = sealer if isinstance(sealer, TransitSealer) else None
    processor = BatchProcessor(
        queue,
        tokenizer,
        store,
        config.device_types,
        config.max_body_bytes,
        sealer,
        max_receive_count,
        stopping,
        signer=signer,
    )
    settings = ConsumerSettings(
        batch_size=config.batch_size,
        wait_seconds=config.wait_seconds if wait_seconds is None else wait_seconds,
        max_batch_age_seconds=config.max_batch_age_seconds,
        receivers=config.receivers,
        workers=config.workers,
        max_in_flight=config.max_in_flight,
        visibility_seconds=config.visibility_seconds,
        shutdown_grace_seconds=config.shutdown_grace_seconds,
        take_back_seconds=config.take_back_seconds,
    )

    def probe() -> None:
        tokenizer.ready()
        store.ready()
        if signer is not None:  # OpenBao: every batch's rows are signed there (C49-4)
            signer.ready()

    gate = DependencyGate(probe, observer)
    consumer = Consumer(queue, processor, settings, gate, ledger_for(settings), observer, stopping)
    return Wired(consumer, queue, processor, tokenizer, store, pool, channel, config.database_conninfo, sealer)


def _sealer(config: EtlConfig) -> TransitSealer | DiscardBodies:
    """Transit (config requires its settings); dead letters keep no body only when the operator opted out."""
    if config.dlq_seal_vault_addr and config.dlq_seal_role_id and config.dlq_seal_secret_id_file:
        return TransitSealer(
            config.dlq_seal_vault_addr, config.dlq_seal_role_id, config.dlq_seal_secret_id_file, config.dlq_seal_key
        )
    log.warning(
        "dead letters keep no body (ETL_DLQ_BODIES=discard): a message quarantined as processing_failed"
        " cannot be re-sent; and with no OpenBao the rows it loads are not signed (`tokenvault erase` refuses"
        " them unless the privacy officer confirms their number: --accepting-unsigned-rows)"
    )
    return DiscardBodies(config.dlq_seal_key)  # letters sealed before the switch stay recognisable


def _hint(error: EtlError) -> str:
    text = str(error).lower()
    if any(word in text for word in ("handshake", "ssl", "certificate", "tls", "socket closed")):
        return (
            " - the TLS handshake failed (the vault closes the connection of a certificate it does not trust):"
            " check ETL_TLS_CA, ETL_TLS_CERT, ETL_TLS_KEY (a certificate of the vault's CA) and ETL_VAULT_SERVER_NAME"
        )
    return ""
