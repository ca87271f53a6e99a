"""A client certificate that expires is refused on every call, not only at the handshake.

Attack 18 (finding 1): TLS checks a certificate's validity once per connection, and not at all
when a TLS session is resumed, so a certificate that expired while its connection stayed open
(or whose session was resumed on a new connection) kept revealing - and the CA (Vault PKI)
refuses to put an expired certificate on its CRL. The vault now checks notBefore/notAfter on
every call, and closes connections after TOKENVAULT_MAX_CONNECTION_AGE_SECONDS.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from grpc.experimental import session_cache

from devstack import certs
from tests.conftest import RunningVault, running_vault
from tests.integration.test_refused_certificates_audited import refusal_rows
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_client import ClientIdentity, TokenType, VaultClient

_TOKEN = "ip_" + "I" * 22


@pytest.fixture(scope="module")
def own_ca(tmp_path_factory: pytest.TempPathFactory) -> certs.Authority:
    """A client CA of this module's own (not the stack's)."""
    return certs.create_authority(tmp_path_factory.mktemp("expiry-ca"))


@pytest.fixture(scope="module")
def own_vault(stack_env: dict[str, str], own_ca: certs.Authority) -> Iterator[RunningVault]:
    with running_vault(stack_env, TOKENVAULT_TLS_CLIENT_CA=str(own_ca.cert_path)) as vault:
        yield vault


def _channel(
    stack_env: dict[str, str], vault: RunningVault, pair: certs.CertPair, cache: object | None = None
) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(stack_env["TLS_CA_CERT"]).read_bytes(),
        private_key=pair.key.read_bytes(),
        certificate_chain=pair.cert.read_bytes(),
    )
    options: list[tuple[str, object]] = [("grpc.ssl_target_name_override", "localhost")]
    if cache is not None:
        options.append(("grpc.ssl_session_cache", cache))  # TLS session resumption, as the tester did
    return grpc.secure_channel(vault.address, credentials, options=options)


def _reveal(channel: grpc.Channel, token: str) -> vault_pb2.DetokenizeResponse:
    return vault_pb2_grpc.TokenVaultStub(channel).Detokenize(
        vault_pb2.DetokenizeRequest(tokens=[token], purpose="CASE-EXPIRY"), timeout=10
    )


def _answered(channel: grpc.Channel) -> bool:
    """Whether the vault answered a call (served or refused it), rather than no connection."""
    try:
        _reveal(channel, _TOKEN)
    except grpc.RpcError as error:
        return error.code() is not grpc.StatusCode.UNAVAILABLE
    return True


def test_a_certificate_that_expires_on_an_open_connection_is_refused_at_its_next_call_and_audited(
    stack_env: dict[str, str],
    own_vault: RunningVault,
    own_ca: certs.Authority,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    etl = certs.issue(own_ca, tmp_path, "etl-service")
    with VaultClient.connect(
        own_vault.address, ClientIdentity(Path(stack_env["TLS_CA_CERT"]), etl.cert, etl.key, "localhost")
    ) as client:
        (token,) = client.tokenize([(TokenType.IP, "198.51.100.181")])
    assert isinstance(token, str)
    short = certs.issue(own_ca, tmp_path, "analyst", validity=datetime.timedelta(seconds=4))
    leaf = x509.load_pem_x509_certificate(short.cert.read_bytes())
    cache = session_cache.ssl_session_cache_lru(8)  # type: ignore[no-untyped-call]
    live = _channel(stack_env, own_vault, short, cache)
    try:
        assert _reveal(live, token).results[0].value.value == "198.51.100.181"  # valid: served
        time.sleep(max(0.0, leaf.not_valid_after_utc.timestamp() - time.time()) + 1.5)
        caplog.set_level(logging.WARNING)
        with pytest.raises(grpc.RpcError) as refused:
            _reveal(live, token)  # the same connection, opened before expiry
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED, refused.value.details()
        assert "expired at" in str(refused.value.details()) and "get a new one" in str(refused.value.details())
        resumed = _channel(stack_env, own_vault, short, cache)
        try:
            with pytest.raises(grpc.RpcError) as refused_again:
                _reveal(resumed, token)  # a new connection resuming the TLS session
            # UNAUTHENTICATED when the session was resumed; UNAVAILABLE if TLS did a full handshake.
            assert refused_again.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE)
        finally:
            resumed.close()
    finally:
        live.close()
    serial = format(leaf.serial_number, "x")
    rows = refusal_rows(stack_env, serial)
    assert rows and set(rows) == {
        ("<anonymous>", "refused: Unauthenticated", serial, leaf.fingerprint(hashes.SHA256()).hex())
    }
    assert any(serial in r.getMessage() and "expired" in r.getMessage() for r in caplog.records)


def test_a_connection_is_closed_after_its_maximum_age_and_the_client_reconnects(
    stack_env: dict[str, str], own_ca: certs.Authority, tmp_path: Path
) -> None:
    analyst = certs.issue(own_ca, tmp_path, "analyst")
    states: list[grpc.ChannelConnectivity] = []
    seen = threading.Lock()

    def record(state: grpc.ChannelConnectivity) -> None:
        with seen:
            states.append(state)

    with running_vault(
        stack_env, TOKENVAULT_TLS_CLIENT_CA=str(own_ca.cert_path), TOKENVAULT_MAX_CONNECTION_AGE_SECONDS="1"
    ) as vault:
        channel = _channel(stack_env, vault, analyst)
        try:
            assert _answered(channel)
            channel.subscribe(record)
            time.sleep(3.5)  # age 1 s (+-10 %), grace for calls in progress
            with seen:
                after_ready = states[states.index(grpc.ChannelConnectivity.READY) :] if states else []
            assert any(state is not grpc.ChannelConnectivity.READY for state in after_ready), (
                f"the connection was not closed after its maximum age: {states}"
            )
            assert _answered(channel), "the client did not reconnect"
        finally:
            channel.unsubscribe(record)
            channel.close()
