"""Building and running the gRPC server: mTLS, health checking, reflection, metrics, graceful stop."""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tokenvault_api.v1 import (
    audit_reports_pb2,
    audit_reports_pb2_grpc,
    key_jobs_pb2,
    key_jobs_pb2_grpc,
    vault_pb2,
    vault_pb2_grpc,
)
from tokenvault_common.health import ListingHealthServicer
from vault_service.adapters.client_crl import RevocationList
from vault_service.domain.identity import IdentityVerifier
from vault_service.entrypoints.audit_reports_servicer import AuditReportsServicer
from vault_service.entrypoints.call_slots import CallSlots
from vault_service.entrypoints.grpc_bounds import HANDSHAKE_SECONDS, RECEIVE_WINDOW_OPTIONS
from vault_service.entrypoints.guard import HARD_MESSAGE_LIMIT, VaultGuard
from vault_service.entrypoints.key_jobs_servicer import KeyJobsServicer
from vault_service.entrypoints.metrics import (
    DEPENDENCY_UP,
    observe_client_crl_refused,
    watch_client_crl_file_in_force,
    watch_client_crl_next_update,
)
from vault_service.entrypoints.request_reads import REQUEST_READ_SECONDS, RequestReads
from vault_service.entrypoints.servicer import TokenVaultServicer
from vault_service.service.audit_reports import AuditReports
from vault_service.service.key_jobs import KeyJobs
from vault_service.service.maintenance import DATABASE, VAULT, HealthReport
from vault_service.service.vault import TokenVault

SERVICE_NAME = vault_pb2.DESCRIPTOR.services_by_name["TokenVault"].full_name
KEY_JOBS_SERVICE_NAME = key_jobs_pb2.DESCRIPTOR.services_by_name["KeyJobs"].full_name
AUDIT_REPORTS_SERVICE_NAME = audit_reports_pb2.DESCRIPTOR.services_by_name["AuditReports"].full_name
DEPENDENCY_HEALTH_PREFIX = "tokenvault.dependency."
"""Health service names per dependency: tokenvault.dependency.vault, tokenvault.dependency.database."""

LIVENESS_SERVICE = "tokenvault.liveness"
"""A health entry that is SERVING for as long as the process serves (for liveness probes)."""

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_credentials(cert: Path, key: Path, client_ca: Path) -> grpc.ServerCredentials:
    """TLS that requires a client certificate issued by `client_ca`."""
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())],
        root_certificates=client_ca.read_bytes(),
        require_client_auth=True,
    )


@dataclass
class VaultServer:
    """A started-or-startable gRPC server and its health servicer."""

    server: grpc.Server
    port: int
    health: ListingHealthServicer
    database_services: tuple[str, ...] = ("", SERVICE_NAME)
    """Health names that follow the database: the server's, TokenVault's and AuditReports' when served."""

    def report(self, dependency: str, healthy: bool) -> None:
        """Record a dependency check in health and metrics.

        The service is NOT_SERVING only without its database; Vault down is a degradation
        (it serves from the keys in memory), visible under the dependency's own health name.
        """
        status = _SERVING if healthy else _NOT_SERVING
        self.health.set(DEPENDENCY_HEALTH_PREFIX + dependency, status)
        DEPENDENCY_UP.labels(dependency).set(1 if healthy else 0)
        if dependency == DATABASE:
            for name in self.database_services:
                self.health.set(name, status)

    def starting(self) -> None:
        """Readiness NOT_SERVING until `report` says otherwise: the health listener answers before the server serves.

        The listener starts before the erase rows are read (every one of them, ~25-50 us each: seconds to minutes),
        and this server starts after: answering SERVING meanwhile (as built) made Kubernetes route calls to a
        replica that served none and count it available in a rolling update (review 40, R40-3). Liveness stays
        SERVING: the process is alive, and the start-up probe does not time the read. No metric moves.
        """
        for name in self.database_services:
            self.health.set(name, _NOT_SERVING)

    @property
    def reporter(self) -> HealthReport:
        """`report` as the callback the key maintainer takes."""
        return self.report


MAX_CONNECTION_AGE_SECONDS = 900
"""How long a client connection may live before the server asks the client to reconnect
(TOKENVAULT_MAX_CONNECTION_AGE_SECONDS). The reconnection is a new connection, though not always a
full TLS handshake (gRPC's OpenSSL server resumes sessions): what bounds a certificate is the
per-call check of its validity and revocation, not this. The client CA bundle is read at start:
removing a CA from it takes a restart (review 19, R19-6)."""
CONNECTION_AGE_GRACE_SECONDS = 30
"""Calls in progress on a connection past its age may finish within this, then it is closed."""

MAX_CONCURRENT_CALLS = 512
"""Calls served or queued at once; more are refused with RESOURCE_EXHAUSTED by gRPC (bounds memory),
before the caller is known. Far above the workers: gRPC counts queued calls too, so with 32 two
certificates' silent calls, held and queued, left no room and every honest call was refused at the
door (review 21, R21-4); now junk is queued, then refused by the guard (over its client's share) in
a moment, and an honest call queued among it is served. A queued call is gRPC core's state for one
stream and what the stream's flow-control window lets in, not a thread."""
RESERVED_WORKERS = 2
"""Workers that calls waiting for their request never hold: they serve the queue (`RequestReads`'s most_waiting)."""
STREAMS_PER_CONNECTION = 64
"""Calls open at once on one connection (HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS: gRPC clients queue
the rest themselves; gRPC core refuses a stream over it - RST_STREAM REFUSED_STREAM - and keeps the
connection: review 22, R22-8). Twice the most one honest client runs on its one channel: the ETL's
workers (ETL_WORKERS, at most 32) each make one call at a time, the bench one per client thread.
Without it one connection could open as many streams as MAX_CONCURRENT_CALLS (512). It does not bound
rapid reset (streams opened and reset at once are no longer open); for that the port relies on gRPC
core's own measures (docs/threat-model.md) and on every
caller holding a client certificate."""


def create_server(
    vault: TokenVault,
    address: str,
    credentials: grpc.ServerCredentials,
    client_ca: bytes,
    workers: int = 16,
    client_crl: Path | None = None,
    max_calls_per_client: int | None = None,
    max_connection_age: float = MAX_CONNECTION_AGE_SECONDS,
    request_read_seconds: float = REQUEST_READ_SECONDS,
    handshake_seconds: float = HANDSHAKE_SECONDS,
    key_jobs: KeyJobs | None = None,
    audit_reports: AuditReports | None = None,
    exported_copy: bool = False,
) -> VaultServer:
    """A server for `vault` bound to `address` (port 0 picks one), with health and reflection.

    `client_ca` (PEM) is the CA that must have issued every client certificate directly;
    `client_crl`, its revocation list (PEM), read again whenever it changes. Raises
    InvalidRevocationList when that file cannot be used. A client identity may have at most
    `max_calls_per_client` calls in progress (default: half the workers). A client connection
    is closed after `max_connection_age` seconds (gRPC adds +-10 % jitter; calls in progress get
    CONNECTION_AGE_GRACE_SECONDS more); the client reconnects (a new connection, possibly a resumed TLS session).
    A call that does not deliver its request within `request_read_seconds` of its admission is ended;
    at most all workers but RESERVED_WORKERS wait for theirs at once (`RequestReads`: room is made
    from the client with the most calls waiting, else the newcomer is refused). A connection must finish
    its TLS handshake within `handshake_seconds`, and may have at most STREAMS_PER_CONNECTION calls open.
    `key_jobs`: the key jobs the service runs for the security team's certificate (KeyJobs; without it,
    that service is not served: UNIMPLEMENTED). `audit_reports`: the audit reports it makes for the security
    team's certificate (AuditReports, likewise), `exported_copy` telling whether they verify against the
    service's exported checkpoint copy.
    """
    revocations = (
        RevocationList(client_crl, x509.load_pem_x509_certificates(client_ca), on_refused=observe_client_crl_refused)
        if client_crl
        else None
    )
    if revocations:
        watch_client_crl_next_update(revocations.next_update_timestamp)
        watch_client_crl_file_in_force(revocations.file_in_force)
    verifier = IdentityVerifier(client_ca, revocations.is_revoked if revocations else None)
    slots = CallSlots(max_calls_per_client or max(1, workers // 2))
    reads = RequestReads(request_read_seconds, most_waiting=max(1, workers - RESERVED_WORKERS))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        interceptors=[VaultGuard(vault, verifier, slots, reads)],
        options=[
            ("grpc.max_receive_message_length", HARD_MESSAGE_LIMIT),
            ("grpc.max_send_message_length", HARD_MESSAGE_LIMIT),
            ("grpc.max_connection_age_ms", int(max_connection_age * 1000)),
            ("grpc.max_connection_age_grace_ms", CONNECTION_AGE_GRACE_SECONDS * 1000),
            ("grpc.server_handshake_timeout_ms", int(handshake_seconds * 1000)),
            ("grpc.max_concurrent_streams", STREAMS_PER_CONNECTION),
            *RECEIVE_WINDOW_OPTIONS,
        ],
        maximum_concurrent_rpcs=MAX_CONCURRENT_CALLS,
    )
    vault_pb2_grpc.add_TokenVaultServicer_to_server(TokenVaultServicer(vault), server)
    if key_jobs is not None:
        key_jobs_pb2_grpc.add_KeyJobsServicer_to_server(KeyJobsServicer(key_jobs), server)
    if audit_reports is not None:
        servicer = AuditReportsServicer(audit_reports, exported_copy)
        audit_reports_pb2_grpc.add_AuditReportsServicer_to_server(servicer, server)
    health_servicer = ListingHealthServicer()  # the stock one advertises List and answers UNIMPLEMENTED
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            *([KEY_JOBS_SERVICE_NAME] if key_jobs else []),
            *([AUDIT_REPORTS_SERVICE_NAME] if audit_reports else []),
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_secure_port(address, credentials)
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}")
    served_with_database = ("", SERVICE_NAME, *([AUDIT_REPORTS_SERVICE_NAME] if audit_reports else []))
    running = VaultServer(server, port, health_servicer, served_with_database)
    for dependency in (VAULT, DATABASE):
        running.report(dependency, True)
    health_servicer.set(LIVENESS_SERVICE, _SERVING)
    return running
