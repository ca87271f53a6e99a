"""A client certificate the CA revoked is refused, within seconds and without a restart.

Without a revocation list a stolen certificate works until it expires (30 days in the stack);
the only other way to stop it was to take its name out of the policy, which stops the person
too. The vault reads the client CA's CRL (TOKENVAULT_TLS_CLIENT_CRL) and reads it again when
it changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from devstack import certs
from tests.conftest import RunningVault, running_vault, stack_identity
from tests.integration.revocation_lists import authority, crl, crl_vault, reveals
from tests.integration.vault_start import start_service
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import ClientIdentity, TokenType, Unauthenticated, VaultClient, open_channel

__all__ = ["authority", "crl", "crl_vault"]  # fixtures used here, shared with the second round's tests


def test_a_revoked_certificate_is_refused_within_seconds_and_the_others_keep_working(
    stack_env: dict[str, str], crl_vault: RunningVault, authority: certs.Authority, crl: Path, tmp_path: Path
) -> None:
    stolen = certs.issue(authority, tmp_path, "analyst")  # a second analyst certificate, then stolen
    stolen_identity = ClientIdentity(authority.cert_path, stolen.cert, stolen.key, "localhost")
    with VaultClient.connect(crl_vault.address, stack_identity(stack_env, "etl-service")) as etl:
        (token,) = etl.tokenize([(TokenType.IP, "198.51.100.77")])
    assert isinstance(token, str)
    assert reveals(crl_vault, stolen_identity, token)

    serial = x509.load_pem_x509_certificate(stolen.cert.read_bytes()).serial_number
    certs.write_revocation_list(authority, [serial], crl)  # the security team revokes it at the CA
    deadline = time.monotonic() + 10
    while True:
        try:
            reveals(crl_vault, stolen_identity, token)
        except Unauthenticated as refused:
            assert "revoked" in str(refused) and format(serial, "x") in str(refused)
            break
        assert time.monotonic() < deadline, "the revoked certificate still reveals 10 s after the CRL changed"
        time.sleep(0.5)
    assert reveals(crl_vault, stack_identity(stack_env, "analyst"), token), "the other analyst certificate stopped"

    # A list the CA did not sign (planted by whoever can write the file) is not taken in: the
    # revocation stays in force rather than being lifted by an empty forged list.
    certs.write_revocation_list(certs.create_authority(tmp_path / "forged"), [], crl)
    time.sleep(3)
    with pytest.raises(Unauthenticated, match="revoked"):
        reveals(crl_vault, stolen_identity, token)


def test_a_revocation_list_the_client_ca_did_not_sign_stops_the_service_at_start(
    stack_env: dict[str, str], crl: Path, tmp_path: Path
) -> None:
    certs.write_revocation_list(certs.create_authority(tmp_path / "other"), [], crl)
    result = start_service(stack_env, TOKENVAULT_TLS_CLIENT_CRL=str(crl))
    assert result.returncode == 2
    assert f"the client CRL {crl} is not signed by the vault's client CA" in result.stderr


def test_a_revoked_certificate_cannot_hold_the_workers_with_calls_that_never_send(
    stack_env: dict[str, str], authority: certs.Authority, crl: Path, tmp_path: Path
) -> None:
    # The guard waited for the body of a refused caller (to count its items) before refusing it:
    # a revoked certificate opened one silent call per worker, outside every client's share, and
    # honest analysts' calls timed out (insider round 5).
    revoked = certs.issue(authority, tmp_path, "analyst")
    certs.write_revocation_list(
        authority, [x509.load_pem_x509_certificate(revoked.cert.read_bytes()).serial_number], crl
    )
    workers, held = 8, threading.Event()

    def never_sends() -> Iterator[vault_pb2.DetokenizeRequest]:
        held.wait(30)
        yield from ()

    with running_vault(stack_env, TOKENVAULT_TLS_CLIENT_CRL=str(crl)) as vault:
        with VaultClient.connect(vault.address, stack_identity(stack_env, "etl-service")) as etl:
            (token,) = etl.tokenize([(TokenType.IP, "198.51.100.78")])
        revoked_channel = open_channel(
            vault.address, ClientIdentity(authority.cert_path, revoked.cert, revoked.key, "localhost")
        )
        silent = revoked_channel.stream_unary(
            "/tokenvault.v1.TokenVault/Detokenize",
            request_serializer=vault_pb2.DetokenizeRequest.SerializeToString,
            response_deserializer=vault_pb2.DetokenizeResponse.FromString,
        )
        try:
            calls = [silent.future(never_sends(), timeout=20) for _ in range(workers)]
            for call in calls:  # each refused at once, while it still has sent nothing
                with pytest.raises(grpc.RpcError) as refused:
                    call.result(timeout=5)
                assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED, refused.value.details()
            started = time.monotonic()
            assert reveals(vault, stack_identity(stack_env, "analyst"), str(token))
            assert time.monotonic() - started < 3, "the honest analyst waited for a worker"
        finally:
            held.set()
            revoked_channel.close()
