"""A certificate the vault refuses after the handshake is audited and logged by serial and SHA-256.

Attack 18 (finding 5): the refusal's row was `<anonymous> refused: Unauthenticated` with no
serial and no digest, and nothing was logged, so the security team that revoked a leaked
certificate could not see that it was being tried. The row and the log line now name the
certificate (serial, SHA-256; never its subject, which may be odd: the log stays plain text).
A certificate TLS itself refuses (another CA, expired at the handshake) never reaches the service.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from devstack import certs
from tests.conftest import RunningVault, running_vault
from tests.integration.revocation_lists import reveals
from tokenvault_client import ClientIdentity, Unauthenticated

_TOKEN = "ip_" + "I" * 22


@pytest.fixture(scope="module")
def own_ca(tmp_path_factory: pytest.TempPathFactory) -> certs.Authority:
    """A client CA of this module's own (not the stack's)."""
    return certs.create_authority(tmp_path_factory.mktemp("refused-ca"))


@pytest.fixture(scope="module")
def leaked(own_ca: certs.Authority, tmp_path_factory: pytest.TempPathFactory) -> certs.CertPair:
    """An analyst certificate of the CA, revoked before the vault starts."""
    return certs.issue(own_ca, tmp_path_factory.mktemp("leaked"), "analyst")


@pytest.fixture(scope="module")
def own_crl(own_ca: certs.Authority, leaked: certs.CertPair, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA's revocation list, revoking `leaked`."""
    path = tmp_path_factory.mktemp("refused-crl") / "client-crl.pem"
    serial = x509.load_pem_x509_certificate(leaked.cert.read_bytes()).serial_number
    certs.write_revocation_list(own_ca, [serial], path)
    return path


@pytest.fixture(scope="module")
def own_vault(stack_env: dict[str, str], own_ca: certs.Authority, own_crl: Path) -> Iterator[RunningVault]:
    with running_vault(
        stack_env, TOKENVAULT_TLS_CLIENT_CA=str(own_ca.cert_path), TOKENVAULT_TLS_CLIENT_CRL=str(own_crl)
    ) as vault:
        yield vault


def _identity(stack_env: dict[str, str], pair: certs.CertPair) -> ClientIdentity:
    return ClientIdentity(Path(stack_env["TLS_CA_CERT"]), pair.cert, pair.key, "localhost")


def _named(pair: certs.CertPair) -> tuple[str, str]:
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    return format(cert.serial_number, "x"), cert.fingerprint(hashes.SHA256()).hex()


def refusal_rows(stack_env: dict[str, str], serial: str) -> list[tuple[object, ...]]:
    """The refusal rows naming the certificate with `serial`: (client, outcome, serial, SHA-256)."""
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        return conn.execute(
            "SELECT client, outcome, client_serial, client_cert_sha256 FROM vault.audit_log"
            " WHERE client_serial = %s AND outcome LIKE 'refused%%'",
            (serial,),
        ).fetchall()


def _refused_is_named(
    stack_env: dict[str, str], pair: certs.CertPair, client: str, caplog: pytest.LogCaptureFixture
) -> None:
    serial, digest = _named(pair)
    assert refusal_rows(stack_env, serial) == [(client, "refused: Unauthenticated", serial, digest)]
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(serial in line and digest in line for line in logged), logged


def test_a_revoked_certificate_tried_again_is_audited_and_logged_by_serial_and_digest(
    stack_env: dict[str, str],
    own_vault: RunningVault,
    leaked: certs.CertPair,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with pytest.raises(Unauthenticated, match="revoked"):
        reveals(own_vault, _identity(stack_env, leaked), _TOKEN)
    _refused_is_named(stack_env, leaked, "<anonymous>", caplog)


def test_a_certificate_with_an_odd_name_is_audited_and_logged_by_serial_and_digest(
    stack_env: dict[str, str],
    own_vault: RunningVault,
    own_ca: certs.Authority,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    odd = certs.issue(own_ca, tmp_path, "Analyst")  # the CA signed it, the vault takes no such name
    caplog.set_level(logging.WARNING)
    with pytest.raises(Unauthenticated, match="not a valid client name"):
        reveals(own_vault, _identity(stack_env, odd), _TOKEN)
    _refused_is_named(stack_env, odd, "<anonymous>", caplog)


def test_a_certificate_for_a_name_outside_the_policy_is_audited_and_logged_by_serial_and_digest(
    stack_env: dict[str, str],
    own_vault: RunningVault,
    own_ca: certs.Authority,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stranger = certs.issue(own_ca, tmp_path, "no-such-client", validity=datetime.timedelta(hours=1))
    caplog.set_level(logging.WARNING)
    with pytest.raises(Unauthenticated, match="unknown to the vault policy"):
        reveals(own_vault, _identity(stack_env, stranger), _TOKEN)
    _refused_is_named(stack_env, stranger, "no-such-client", caplog)
