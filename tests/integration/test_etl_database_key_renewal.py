"""A certificate renewal caught between its two file writes is waited out; a key that stays wrong stops the ETL.

Review 50, R50-6: libpq's "certificate does not match private key file" (or "could not load private key file")
stopped the ETL with exit 1 as a misconfiguration - also when a connection was opened between the two writes of a
renewal (Vault Agent rendering the certificate and the key as two templates), a state gone a moment later. Such a
refusal now counts only when a second connection 1 s later meets one too. Against a real PostgreSQL requiring TLS
and a client certificate (pg_tls_cluster.py), a real ETL process: its sessions are ended, and the check it makes
when its pool cannot connect (`_login_refused`) is held at the server's answer to its TLS request until the key
file holds another key; the key is put back 0.5 s later.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devstack.events import send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import dead_letter_reasons
from tests.integration.etl_landings import assert_each_event_landed_once, events
from tests.integration.etl_process import exit_within, start_etl, wait_until_landed
from tests.integration.pg_tls_cluster import TlsCluster, tls_cluster

CHECK_AFTER_SECONDS = 1.5
"""A connection arriving this long after the ETL's sessions ended is its check: the pool's own attempts come at once
(its connections found ended as the busy ETL takes them; held, they make no more), the check after a wait for a
pooled connection - the gate's probe's 2 s, or a batch's 10 s."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    with tls_cluster(tmp_path_factory.mktemp("pg-key-renewal")) as running:
        yield running


class TlsRequestHold:
    """A TCP relay to PostgreSQL whose `hold()` keeps each new connection waiting for the server's answer to its TLS
    request (libpq reads the certificate and key files once it has it) until `release()`; their arrival times kept."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._holding = False
        self._released = threading.Event()
        self.held_arrivals: list[float] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def hold(self) -> None:
        """Hold each new connection at the server's answer to its TLS request."""
        self._released.clear()
        self._holding = True

    def release(self) -> None:
        """Let the held connections go on, and pass new ones straight through."""
        self._holding = False
        self._released.set()

    def close(self) -> None:
        """Stop accepting."""
        self.release()
        self._listener.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError), client, socket.create_connection(("127.0.0.1", self._upstream)) as server:
            held = self._holding
            if held:
                self.held_arrivals.append(time.monotonic())
            server.sendall(_exactly(client, 8))  # SSLRequest (gssencmode=disable: no GSSENCRequest first)
            answer = server.recv(1)
            if held:
                self._released.wait(30)
            client.sendall(answer)
            threading.Thread(target=_pump, args=(server, client), daemon=True).start()
            _pump(client, server)


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


def _pump(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _end_etl_sessions(cluster: TlsCluster) -> None:
    with psycopg.connect(cluster.postgres.admin_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'tokenvault_etl'")


class Running:
    """An ETL process loading `sent` into the cluster through `relay`, with a key file of its own."""

    def __init__(
        self, stack_env: dict[str, str], vault: RunningVault, cluster: TlsCluster, relay: TlsRequestHold, key: Path
    ) -> None:
        self.sent = events(1500, malformed_rate=0.0)
        self.admin, self.endpoint = cluster.postgres.admin_dsn, stack_env["SQS_ENDPOINT_URL"]
        dsn = cluster.etl_dsn(port=str(relay.port), sslkey=str(key), gssencmode="disable")
        self.env = {
            **etl_harness_env(stack_env, vault.address, visibility_timeout=20),
            "ETL_DATABASE_DSN": dsn,
            "ETL_BATCH_SIZE": "50",
            "ETL_SHUTDOWN_GRACE_SECONDS": "5",
            "ETL_METRICS_PORT": "0",
        }
        send_events(sqs_client(self.endpoint), self.env["ETL_QUEUE_URL"], self.sent)
        self.process = start_etl(self.env)

    def wait_landed(self, count: int) -> None:
        wait_until_landed(self.process, self.admin, self.sent, count)

    def loads_every_event_once_after(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
        with etl_consumer(self.env) as etl:
            etl.wired.consumer.drain()
        assert_each_event_landed_once(self.admin, self.sent, self.endpoint, etl.dlq_url)


@pytest.fixture
def keys(cluster: TlsCluster, tmp_path: Path) -> tuple[Path, bytes, bytes]:
    """The ETL's key file (its certificate's key, 0600), that key and another certificate's key (the renewal's)."""
    good = cluster.etl_certificate.key.read_bytes()
    other = cluster.client_certificate("tokenvault_etl").key.read_bytes()
    key = tmp_path / "etl-key.pem"
    key.write_bytes(good)
    key.chmod(0o600)
    return key, good, other


def test_a_renewal_caught_between_its_two_writes_is_waited_out_and_every_event_loads(
    stack_env: dict[str, str], vault: RunningVault, cluster: TlsCluster, keys: tuple[Path, bytes, bytes]
) -> None:
    key, good, renewed = keys
    relay = TlsRequestHold(cluster.postgres.port)
    etl = Running(stack_env, vault, cluster, relay, key)
    try:
        etl.wait_landed(300)
        relay.hold()
        ended = time.monotonic()
        _end_etl_sessions(cluster)
        deadline = ended + 30
        while not any(arrived - ended >= CHECK_AFTER_SECONDS for arrived in relay.held_arrivals):
            assert etl.process.poll() is None, exit_within(etl.process, 5, "a check").decode()[-2000:]
            assert time.monotonic() < deadline, f"no check within 30 s: {relay.held_arrivals}"
            time.sleep(0.02)
        key.write_bytes(renewed)  # the renewal's first write: the key of a certificate not written yet
        relay.release()  # the check, and the pool's attempts, read the files now
        time.sleep(0.5)
        key.write_bytes(good)  # its second write: they match again
        etl.wait_landed(len(etl.sent))  # before the fix: exit 1, "the sslkey file ... cannot be used"
        etl.process.send_signal(signal.SIGTERM)
        err = exit_within(etl.process, 60, "SIGTERM")
        assert etl.process.returncode == 0, err.decode()[-2000:]
        assert b"connecting again in 1 s" in err, err.decode()[-2000:]  # the check met the renewal's first write
        etl.loads_every_event_once_after()
    finally:
        relay.close()


def test_a_key_that_stays_wrong_stops_the_etl_with_exit_1_and_dead_letters_no_good_event(
    stack_env: dict[str, str], vault: RunningVault, cluster: TlsCluster, keys: tuple[Path, bytes, bytes]
) -> None:
    key, good, other = keys
    relay = TlsRequestHold(cluster.postgres.port)
    etl = Running(stack_env, vault, cluster, relay, key)
    try:
        etl.wait_landed(300)
        key.write_bytes(other)
        _end_etl_sessions(cluster)
        err = exit_within(etl.process, 60, "its key file changing for good")
        assert etl.process.returncode == 1, err.decode()[-2000:]
        assert b"the sslkey file of ETL_DATABASE_DSN cannot be used" in err, err.decode()[-2000:]
        unloaded = dead_letter_reasons(etl.endpoint, etl.env["ETL_DLQ_URL"])
        assert not [r for r in unloaded if r in ("dependency_unavailable", "processing_failed")], unloaded
        key.write_bytes(good)
        etl.loads_every_event_once_after()
    finally:
        key.write_bytes(good)
        relay.close()
