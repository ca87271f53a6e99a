"""SIGTERM while the ETL's vault TLS probe waits on a vault that does not answer: the stop ends the probe at once.

A Tokenize or health check failing in its TLS handshake makes the ETL ask, with a handshake of its own, whether the
vault refuses its TLS settings (etl_service/adapters/vault_tls_probe.py). That probe's waits (connect, handshake,
first frame: 3 s each, a second handshake after a prompt close) did not look at the stop: a SIGTERM met it and the
ETL went on up to ~9 s more, past a short grace period. Here the vault's path closes gRPC's connections at once (the
ETL's calls fail in the handshake: UNAVAILABLE, "Socket closed") and holds the probe's connection, answering nothing
- a probe every failing call; the stop comes mid-probe and the ETL exits within the grace, losing nothing.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import threading
import time

from devstack.events import send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.etl_landings import assert_each_event_landed_once, events
from tests.integration.etl_process import exit_within, start_etl, wait_until_landed
from tests.integration.tcp_outage import TcpOutage

GRACE_SECONDS = 2
"""Shorter than the probe's handshake wait (3 s): before the fix the grace ran out, its release ending the stop."""
ENCRYPT_THEN_MAC = 22
"""The TLS extension OpenSSL's ClientHello (the probe's: Python's ssl) offers and BoringSSL's (gRPC's) does not."""


def _extensions(client_hello: bytes) -> set[int]:
    """The extension types of a TLS record holding a ClientHello (empty when it is not one)."""
    with contextlib.suppress(IndexError, struct.error):
        at = 5 + 4 + 2 + 32  # record header, handshake header, version, random
        at += 1 + client_hello[at]  # session id
        at += 2 + struct.unpack_from(">H", client_hello, at)[0]  # cipher suites
        at += 1 + client_hello[at]  # compression methods
        end = at + 2 + struct.unpack_from(">H", client_hello, at)[0]
        at += 2
        found = set()
        while at < end:
            kind, length = struct.unpack_from(">HH", client_hello, at)
            found.add(kind)
            at += 4 + length
        return found
    return set()


class ProbesHeld:
    """Passes connections to the vault at `port` (a TcpOutage) until `hold_probes()`; then ends them, closes each
    new gRPC connection on its ClientHello and holds each connection of the probe open, answering nothing."""

    def __init__(self, port: int) -> None:
        self._passing = TcpOutage(port)
        self._holding = threading.Event()
        self.probe_held = threading.Event()
        self._held: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def hold_probes(self) -> None:
        """From now on: gRPC's connections closed at their first flight, the probe's held."""
        self._holding.set()
        self._passing.down()

    def pass_all(self) -> None:
        """Pass every connection to the vault again (the held ones are closed)."""
        self._holding.clear()
        self._passing.up()
        for sock in self._held:
            sock.close()

    def close(self) -> None:
        """Stop accepting and passing."""
        self._listener.close()
        self._passing.close()
        for sock in self._held:
            sock.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if not self._holding.is_set():
            with contextlib.suppress(OSError):
                upstream = socket.create_connection(("127.0.0.1", self._passing.port))
                threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
                _pump(upstream, client)
            return
        with contextlib.suppress(OSError):
            hello = client.recv(65536)
            if ENCRYPT_THEN_MAC in _extensions(hello):
                self._held.append(client)  # the probe's: nothing answered, nothing closed
                self.probe_held.set()
                return
        client.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    for end in (source, target):
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)


def test_sigterm_during_a_vault_tls_probe_exits_within_the_grace_and_loses_nothing(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    relay = ProbesHeld(int(vault.address.rpartition(":")[2]))
    sent = events(1500, malformed_rate=0.0)
    admin, endpoint = stack_env["PG_ADMIN_DSN"], stack_env["SQS_ENDPOINT_URL"]
    env = {
        **etl_harness_env(stack_env, f"127.0.0.1:{relay.port}", visibility_timeout=30),
        "ETL_BATCH_SIZE": "50",
        "ETL_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        "ETL_METRICS_PORT": "0",
    }
    send_events(sqs_client(endpoint), env["ETL_QUEUE_URL"], sent)
    process = start_etl(env)
    try:
        wait_until_landed(process, admin, sent, 100)
        relay.hold_probes()
        assert relay.probe_held.wait(30), "the ETL never probed the vault's TLS"
        time.sleep(0.3)  # mid-probe: it waits for the vault's ServerHello (3 s before the fix)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        err = exit_within(process, 60, "SIGTERM")
        took = time.monotonic() - signalled
        print(f"exit {process.returncode} {took:.2f} s after SIGTERM")
        assert process.returncode == 0, err.decode()[-2000:]
        assert b"shutdown grace over" not in err, err.decode()[-2000:]  # what ended the stop before the fix
        assert took < GRACE_SECONDS - 0.5, f"exit took {took:.1f} s: the stop waited on the probe"
        assert b"refused the ETL's TLS" not in err  # the probe said nothing: an outage
    finally:
        if process.poll() is None:
            process.kill()
    relay.pass_all()
    try:
        with etl_consumer(env) as etl:
            etl.wired.consumer.drain()
        assert_each_event_landed_once(admin, sent, endpoint, etl.dlq_url)
    finally:
        relay.close()
