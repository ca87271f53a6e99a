"""Fixtures that start real components: OpenBao, SQS (ministack) and PostgreSQL on free ports.

The session starts them once through the same code as `make up` (devstack) and stops them,
by PID, at the end. Vault servers run in-process on port 0 so tests can start, stop and
restart them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from devstack.procs import PORT_SLICE_VARIABLE
from devstack.sqs import create_queues
from devstack.stack import etl_service_env, temporary_components, vault_service_env
from etl_service.bootstrap import Wired
from etl_service.bootstrap import bootstrap as etl_bootstrap
from etl_service.config import EtlConfig
from etl_service.entrypoints.metrics import MetricsObserver
from tokenvault_api.v1 import vault_pb2_grpc
from tokenvault_client import ClientIdentity, VaultClient, open_channel
from vault_service.bootstrap import Bootstrapped
from vault_service.bootstrap import bootstrap as vault_bootstrap
from vault_service.config import VaultServiceConfig
from vault_service.entrypoints.audit_report_session import audit_reports_of
from vault_service.entrypoints.key_job_session import key_jobs_of
from vault_service.entrypoints.server import VaultServer, create_server, server_credentials
from vault_service.service.maintenance import KeyMaintainer


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker (`make test` runs 2), stacks take ports from this worker's slice only (R35-4)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and count:
        os.environ[PORT_SLICE_VARIABLE] = f"{int(worker[2:])}/{count}"


@pytest.fixture(autouse=True)
def logging_left_as_found() -> Iterator[None]:
    """Every test leaves the root logger's handlers and level as it found them.

    An entrypoint's `main()` called in-process (the lock watchdog's misconfiguration tests) configures logging
    for its process: a handler on the stream pytest captured for that test, closed after it, and level INFO. Left
    in place, every later test's log line failed to write (`--- Logging error ---` on stderr) and INFO lines
    reached tests that assert what was logged (CI 19:44: two unit tests failed that way).
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def stack_env() -> Iterator[dict[str, str]]:
    """OpenBao + SQS + Postgres + certificates, as the env file values of the stack."""
    with temporary_components("tokenvault-test-") as stack:
        yield stack.env


@dataclass
class RunningVault:
    """An in-process vault server, with its wiring for tests that reach behind the API."""

    address: str
    server: VaultServer
    wired: Bootstrapped
    maintainer: KeyMaintainer

    def stop(self) -> None:
        self.server.server.stop(0).wait()

    def wait_for_checkpoint(self, seconds: float = 15) -> None:
        """Wait until a signed audit checkpoint covers the newest audit row."""
        deadline = time.monotonic() + seconds
        while True:
            head = self.wired.audit.head()
            if head is not None and self.wired.audit.last_checkpoint_head() >= head.head_id:
                return
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.2)


def vault_config(env: dict[str, str], address: str = "127.0.0.1:0", **overrides: str) -> VaultServiceConfig:
    """The vault service configuration of the test stack."""
    settings = {
        **vault_service_env(env),
        **{k: env[k] for k in ("TOKENVAULT_AUDIT_CHECKPOINT_FILE",) if k in env},  # a database of its own
        "TOKENVAULT_GRPC_ADDRESS": address,
        "TOKENVAULT_METRICS_PORT": "0",
        **overrides,
    }
    if "TOKENVAULT_DATABASE_DSN" in overrides and "TOKENVAULT_AUDIT_CHECKPOINT_FILE" not in overrides:
        # Another database's checkpoints in the session's exported file would contradict the
        # session database's log (audit-verify checks every exported checkpoint).
        other = hashlib.sha256(overrides["TOKENVAULT_DATABASE_DSN"].encode()).hexdigest()[:12]
        settings["TOKENVAULT_AUDIT_CHECKPOINT_FILE"] = str(
            Path(env["STACK_DIR"]) / "audit" / f"checkpoints-{other}.jsonl"
        )
    return VaultServiceConfig.from_env(settings)


@contextmanager
def running_vault(env: dict[str, str], address: str = "127.0.0.1:0", **overrides: str) -> Iterator[RunningVault]:
    """A vault server on real OpenBao and Postgres, stopped on exit."""
    config = vault_config(env, address, **overrides)
    wired = vault_bootstrap(config)
    credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
    key_jobs = key_jobs_of(wired, config)  # as the service: KeyJobs for the security team's certificate
    try:
        server = create_server(
            wired.vault,
            config.grpc_address,
            credentials,
            config.tls_client_ca.read_bytes(),
            workers=8,
            client_crl=config.tls_client_crl,
            max_connection_age=config.max_connection_age_seconds,
            request_read_seconds=config.request_read_seconds,
            handshake_seconds=config.handshake_seconds,
            key_jobs=key_jobs,
            audit_reports=audit_reports_of(wired, config),
            exported_copy=config.audit_checkpoint_file is not None,
        )
    except BaseException:  # refused at start (a CRL it cannot use): as the service, it closes its pool
        wired.close()
        raise
    maintainer = wired.maintainer(server.reporter, config.key_check_seconds)
    upkeep = wired.audit_upkeep(
        config.audit_checkpoint_seconds, config.audit_checkpoint_file, config.audit_unchecked_seconds
    )
    try:
        maintainer.start()  # as the service does: the erasure mark and the erased tokens are read before serving
    except BaseException:  # refused at start (the erase rows unread): as the service, it closes its pool
        key_jobs.stop("the test's vault did not start", 30)
        wired.close()
        raise
    server.server.start()
    upkeep.start()
    try:
        yield RunningVault(f"127.0.0.1:{server.port}", server, wired, maintainer)
    finally:
        key_jobs.stop("the test's vault is stopping", 30)
        server.server.stop(0).wait()
        maintainer.stop()
        upkeep.stop()
        wired.close()


@pytest.fixture(scope="session")
def vault(stack_env: dict[str, str]) -> Iterator[RunningVault]:
    """One vault server for the session."""
    with running_vault(stack_env) as running:
        yield running


def stack_identity(env: dict[str, str], client: str) -> ClientIdentity:
    """The mTLS files of the stack certificate of `client` (e.g. analyst)."""
    certs = Path(env["STACK_DIR"]) / "certs"
    return ClientIdentity(certs / "ca.pem", certs / f"{client}.pem", certs / f"{client}-key.pem", "localhost")


def client_channel(env: dict[str, str], address: str, client: str) -> grpc.Channel:
    """An mTLS channel presenting the stack certificate of `client`, for tests of the wire protocol itself."""
    return open_channel(address, stack_identity(env, client), transparent_retry=True)


@contextmanager
def vault_clients(env: dict[str, str], vault_address: str) -> Iterator[Callable[..., VaultClient]]:
    """make("analyst") -> a VaultClient of the vault at `vault_address` (or make's `address`) authenticated as that
    stack client, VaultClient's `options` passed on; every client made is closed on leaving."""
    clients: list[VaultClient] = []

    def make(client: str, address: str | None = None, **options: Any) -> VaultClient:
        made = VaultClient.connect(address or vault_address, stack_identity(env, client), **options)
        clients.append(made)
        return made

    try:
        yield make
    finally:
        for made in clients:
            made.close()


@pytest.fixture
def client_for(stack_env: dict[str, str], vault: RunningVault) -> Iterator[Callable[..., VaultClient]]:
    """client_for("analyst") -> a VaultClient of the session's vault authenticated as that client."""
    with vault_clients(stack_env, vault.address) as make:
        yield make


@pytest.fixture
def stub_for(stack_env: dict[str, str], vault: RunningVault) -> Iterator[object]:
    """stub_for("analyst") -> a TokenVault stub authenticated as that client."""
    channels: list[grpc.Channel] = []

    def make(client: str, address: str | None = None) -> vault_pb2_grpc.TokenVaultStub:
        channel = client_channel(stack_env, address or vault.address, client)
        channels.append(channel)
        return vault_pb2_grpc.TokenVaultStub(channel)

    yield make
    for channel in channels:
        channel.close()


@dataclass
class EtlHarness:
    """A fresh queue pair and an ETL consumer wired to real SQS, vault and Postgres."""

    queue_url: str
    dlq_url: str
    wired: Wired


def etl_harness_env(
    env: dict[str, str], vault_address: str, visibility_timeout: int = 30, max_receive_count: int = 5
) -> dict[str, str]:
    """The ETL environment for new queues (unique names) with the given lease and redrive count."""
    name = f"q-{uuid.uuid4().hex[:12]}"
    queue_url, dlq_url = create_queues(env["SQS_ENDPOINT_URL"], visibility_timeout, name, max_receive_count)
    return {
        **etl_service_env(env),
        "ETL_QUEUE_URL": queue_url,
        "ETL_DLQ_URL": dlq_url,
        "ETL_VAULT_ADDRESS": vault_address,
        "ETL_VISIBILITY_TIMEOUT_SECONDS": str(visibility_timeout),
    }


@contextmanager
def etl_harness(
    env: dict[str, str], vault_address: str, visibility_timeout: int = 30, **overrides: str
) -> Iterator[EtlHarness]:
    """New queues (unique names) and a consumer in drain mode."""
    with etl_consumer({**etl_harness_env(env, vault_address, visibility_timeout), **overrides}) as harness:
        yield harness


@contextmanager
def etl_consumer(etl_env: dict[str, str]) -> Iterator[EtlHarness]:
    """A consumer in drain mode for the queues of an existing ETL environment."""
    config = EtlConfig.from_env(etl_env)
    wired = etl_bootstrap(config, wait_seconds=1, observer=MetricsObserver())
    try:
        yield EtlHarness(config.queue_url, config.dlq_url, wired)
    finally:
        wired.close()
