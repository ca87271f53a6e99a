"""A vault whose TLS refuses the ETL while it runs stops it naming the setting; a vault down stays an outage (etl50).

gRPC reports a refused handshake as UNAVAILABLE, as it reports the vault down: the ETL's certificate refused by the
vault's client CA reads "Socket closed", a vault certificate ETL_TLS_CA does not verify "Tls handshake failed". The
start check exits 1 on either, but once running the ETL took both for an outage for ever - batches postponed, the
gate closed, no word a person could act on. Each case here is a real vault restarted on the ETL's address with
other TLS settings; the ETL asks with a handshake of its own (etl_service/adapters/vault_tls_probe.py).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import certs
from devstack.events import send_events
from devstack.procs import free_port
from devstack.sqs import sqs_client
from etl_service.adapters.vault_client import GrpcTokenizer
from etl_service.adapters.vault_tls_probe import VaultTls, handshake_refusal
from etl_service.config import EtlConfig
from etl_service.errors import DependencyDown, Misconfigured
from tests.conftest import etl_consumer, etl_harness_env, running_vault
from tests.integration.dead_letters import dead_letter_reasons
from tests.integration.etl_landings import assert_each_event_landed_once, events
from tests.integration.etl_process import exit_within, start_etl, wait_until_landed
from tests.integration.tcp_outage import TcpOutage
from tokenvault_client.channel import ClientIdentity, open_channel

CLIENT_CA_REFUSES = b"ETL_TLS_CERT is expired or not of the vault's client CA"
SERVER_CA_UNVERIFIED = b"the vault's certificate is not one ETL_TLS_CA verifies"
REFUSED_TLS = b"vault service refused the ETL's TLS (the TLS handshake failed): "
OtherSettings = dict[str, dict[str, str]]


@pytest.fixture
def other_settings(tmp_path: Path) -> OtherSettings:
    """A vault's settings by case: a client CA that did not sign the ETL's certificate; a server certificate of
    a CA the ETL's ETL_TLS_CA is not."""
    other = certs.create_authority(tmp_path / "other", "another CA")
    server = certs.issue(other, tmp_path / "other", "tokenvault-vault", server=True)
    return {
        "client_ca": {"TOKENVAULT_TLS_CLIENT_CA": str(other.cert_path)},
        "server_ca": {"TOKENVAULT_TLS_CERT": str(server.cert), "TOKENVAULT_TLS_KEY": str(server.key)},
    }


def _tls(env: dict[str, str], address: str) -> VaultTls:
    config = EtlConfig.from_env({**env, "ETL_VAULT_ADDRESS": address})
    return VaultTls(
        address,
        config.tls_ca.read_bytes(),
        config.tls_cert.read_bytes(),
        config.tls_key.read_bytes(),
        config.vault_server_name,
    )


@pytest.fixture
def etl_env(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The ETL's environment (new queues) for a vault on an address of the test's own."""
    yield etl_harness_env(stack_env, f"127.0.0.1:{free_port()}", visibility_timeout=20, max_receive_count=3)


def _tokenizer(tls: VaultTls) -> GrpcTokenizer:
    identity = ClientIdentity(Path(), Path(), Path(), tls.server_name, tls.ca_pem, tls.cert_pem, tls.key_pem)
    return GrpcTokenizer(open_channel(tls.address, identity, transparent_retry=True), tls=tls)


@pytest.mark.parametrize(("case", "said"), [("client_ca", CLIENT_CA_REFUSES), ("server_ca", SERVER_CA_UNVERIFIED)])
def test_a_vault_refusing_the_etls_tls_is_a_misconfiguration_naming_the_setting(
    stack_env: dict[str, str], etl_env: dict[str, str], other_settings: OtherSettings, case: str, said: bytes
) -> None:
    tls = _tls(etl_env, etl_env["ETL_VAULT_ADDRESS"])
    with running_vault(stack_env, tls.address, **other_settings[case]):
        assert (refused := handshake_refusal(tls)) is not None and said.decode() in refused, refused
        with pytest.raises(Misconfigured, match=said.decode()):
            _tokenizer(tls).ready()
        with pytest.raises(Misconfigured, match=said.decode()):
            _tokenizer(tls).tokenize(["192.0.2.1"], ["tokenvault-etl-start-up-probe"])


def test_a_vault_down_or_cut_mid_handshake_stays_an_outage(stack_env: dict[str, str], etl_env: dict[str, str]) -> None:
    tls = _tls(etl_env, etl_env["ETL_VAULT_ADDRESS"])
    with running_vault(stack_env, tls.address) as vault:
        assert handshake_refusal(tls) is None  # the vault accepts the ETL
        proxy = TcpOutage(int(vault.address.rpartition(":")[2]))
        cut = _tls(etl_env, f"127.0.0.1:{proxy.port}")
        proxy.down()  # each connection accepted and closed at once
        assert handshake_refusal(cut) is None
        with pytest.raises(DependencyDown) as down:
            _tokenizer(cut).ready()
        assert not isinstance(down.value, Misconfigured)
        proxy.up()
        proxy.freeze()  # accepted, nothing passed: a hung vault
        assert handshake_refusal(cut, timeout=1) is None
        proxy.up()
    assert handshake_refusal(tls) is None  # nothing listens


class LateLastFlight:
    """A TCP relay to `port` passing the client's first chunk (its ClientHello) at once and the rest `delay` s late.

    What a lost segment or a congested link does to the client's last handshake flight: under TLS 1.3 the client's
    handshake is over, and the server, not having read that flight by its handshake deadline, closes.
    """

    def __init__(self, port: int, delay: float) -> None:
        self._upstream, self._delay = port, delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        """Stop accepting (relayed connections end with their ends)."""
        self._listener.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                server = socket.create_connection(("127.0.0.1", self._upstream))
                threading.Thread(target=self._relay, args=(client, server, self._delay), daemon=True).start()
                threading.Thread(target=self._relay, args=(server, client, 0.0), daemon=True).start()

    @staticmethod
    def _relay(source: socket.socket, target: socket.socket, delay: float) -> None:
        first = True
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not first:
                    time.sleep(delay)
                first = False
                target.sendall(data)
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def test_a_vault_closing_at_its_handshake_deadline_stays_an_outage(
    stack_env: dict[str, str], etl_env: dict[str, str]
) -> None:
    """Review 50, R50-2: the ETL's last flight late past the vault's handshake deadline was read as its certificate
    refused - the vault closes right after the ETL's handshake either way - and the ETL exited 1 blaming a valid
    certificate. A refusal closes at once; this close comes at the deadline (1.5 s here, the flight 2 s late)."""
    with running_vault(stack_env, TOKENVAULT_HANDSHAKE_SECONDS="1.5") as vault:
        relay = LateLastFlight(int(vault.address.rpartition(":")[2]), delay=2.0)
        try:
            late = _tls(etl_env, f"127.0.0.1:{relay.port}")
            assert handshake_refusal(late) is None
            with pytest.raises(DependencyDown) as down:
                _tokenizer(late).ready()
            assert not isinstance(down.value, Misconfigured), down.value
        finally:
            relay.close()


@pytest.mark.parametrize(("case", "said"), [("client_ca", CLIENT_CA_REFUSES), ("server_ca", SERVER_CA_UNVERIFIED)])
def test_a_vault_refusing_the_etls_tls_mid_run_stops_it_with_exit_1_and_dead_letters_no_good_event(
    stack_env: dict[str, str], etl_env: dict[str, str], other_settings: OtherSettings, case: str, said: bytes
) -> None:
    """The ETL's vault is restarted, after 300 events landed, with TLS settings that refuse it."""
    sent = events(3000, malformed_rate=0.05)
    admin, endpoint, address = stack_env["PG_ADMIN_DSN"], stack_env["SQS_ENDPOINT_URL"], etl_env["ETL_VAULT_ADDRESS"]
    env = {**etl_env, "ETL_BATCH_SIZE": "50", "ETL_SHUTDOWN_GRACE_SECONDS": "5", "ETL_METRICS_PORT": "0"}
    send_events(sqs_client(endpoint), env["ETL_QUEUE_URL"], sent)
    process = start_etl(env)
    try:
        with running_vault(stack_env, address):
            wait_until_landed(process, admin, sent, 300)
        with running_vault(stack_env, address, **other_settings[case]):
            err = exit_within(process, 60, "the vault refusing it")
        assert process.returncode == 1, err.decode()[-2000:]
        assert REFUSED_TLS in err and said in err, err.decode()[-2000:]
        unloaded = [r for r in dead_letter_reasons(endpoint, env["ETL_DLQ_URL"]) if r != "invalid_payload"]
        assert not [r for r in unloaded if r in ("dependency_unavailable", "processing_failed")], unloaded
    finally:
        if process.poll() is None:
            process.kill()
    with running_vault(stack_env, address), etl_consumer(env) as etl:
        etl.wired.consumer.drain()
    assert_each_event_landed_once(admin, sent, endpoint, etl.dlq_url)
