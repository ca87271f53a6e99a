"""The Kubernetes DSNs' `sslmode=verify-full` sends nothing to a server that is not the database.

docs/threat-model.md row 14. No TLS Postgres runs here, so the database side stays configuration;
what is acted is the client side: each DSN the manifests' Vault agent renders (its query string as
written, the host name it verifies) is pointed, through `hostaddr`, at an impostor on loopback
that asks for the password in clear once it gets a startup message. With the database's CA given
(as the platform must), libpq refuses a certificate from another CA, one of the CA's for another
name, a server without TLS, and any server when the CA file is missing: the impostor never sees a
startup message, let alone a password. The control shows what the protection rests on: a server
holding the CA's certificate for the name gets the password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from devstack.certs import CertPair, create_authority, issue
from tests.integration.fake_postgres import Impostor, serving
from tests.k8s_manifests import by_kind

DATABASE_HOST = "postgres.tokenvault-data.svc"


@dataclass(frozen=True)
class Certificates:
    database_ca: Path
    genuine: CertPair
    """The database CA's certificate for the database's name: what only the database should hold."""
    other_name: CertPair
    other_ca: CertPair


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("pg-tls")
    database_ca = create_authority(directory / "ca", "database CA")
    other_ca = create_authority(directory / "other", "someone else's CA")
    return Certificates(
        database_ca.cert_path,
        issue(database_ca, directory / "genuine", "postgres", server=True, server_names=[DATABASE_HOST]),
        issue(database_ca, directory / "renamed", "postgres", server=True, server_names=["postgres.elsewhere.svc"]),
        issue(other_ca, directory / "forged", "postgres", server=True, server_names=[DATABASE_HOST]),
    )


def manifest_dsns() -> dict[str, str]:
    """Each Deployment's agent-rendered DSN file (its `_DSN_FILE`), a user and password for the template's."""
    found = {}
    for name, deployment in by_kind("Deployment").items():
        template = str(deployment["spec"]["template"]["metadata"]["annotations"].get(DSN_TEMPLATE, ""))
        for dsn in re.findall(r"postgresql://[^\n]+", template):
            found[name] = dsn.replace("{{ .Data.username }}", "v-etl-x").replace("{{ .Data.password }}", "secret")
    assert found.keys() == {"vault-service", "etl-service", "lock-watchdog"}
    return found


DSN_TEMPLATE = "vault.hashicorp.com/agent-inject-template-dsn"
"""The Vault agent's template of the file each Deployment's database login is read from at every connection."""


def _connect(dsn: str, impostor: Impostor, root_cert: Path) -> None:
    """`dsn` as written (host name, sslmode), its TCP connection sent to the impostor."""
    conninfo = make_conninfo(
        dsn, hostaddr="127.0.0.1", port=impostor.port, sslrootcert=str(root_cert), connect_timeout=5
    )
    psycopg.connect(conninfo).close()


@pytest.mark.parametrize("dsn", manifest_dsns().values(), ids=manifest_dsns().keys())
@pytest.mark.parametrize(
    ("server", "refusal"),
    [
        ("other_ca", "certificate verify failed"),
        ("other_name", f'does not match host name "{DATABASE_HOST}"'),
        ("no_tls", "server does not support SSL, but SSL was required"),
        ("no_ca_file", "root certificate file .* does not exist"),  # the CA is the platform's to supply
    ],
)
def test_a_manifest_dsn_sends_nothing_to_a_server_that_is_not_the_database(
    certificates: Certificates, tmp_path: Path, dsn: str, server: str, refusal: str
) -> None:
    cert = {"other_ca": certificates.other_ca, "other_name": certificates.other_name, "no_tls": None}
    root_cert = tmp_path / "missing-root.crt" if server == "no_ca_file" else certificates.database_ca
    impostor = Impostor(cert=cert.get(server, certificates.genuine))
    with serving(impostor), pytest.raises(psycopg.OperationalError, match=refusal):
        _connect(dsn, impostor, root_cert)
    assert (impostor.startups, impostor.replies) == (0, [])


@pytest.mark.parametrize("dsn", manifest_dsns().values(), ids=manifest_dsns().keys())
def test_control_a_server_holding_the_ca_s_certificate_for_the_name_gets_the_password(
    certificates: Certificates, dsn: str
) -> None:
    impostor = Impostor(cert=certificates.genuine)
    with serving(impostor), pytest.raises(psycopg.OperationalError):  # the impostor closes after the password
        _connect(dsn, impostor, certificates.database_ca)
    assert (impostor.startups, impostor.replies) == (1, [b"p"])
