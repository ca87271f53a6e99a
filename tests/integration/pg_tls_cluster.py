"""A PostgreSQL cluster of the test's own that requires TLS and a client certificate of its own CA (etl50).

The stack's PostgreSQL has no TLS, and its pg_hba.conf is every test's: the refusals a server makes for the
ETL's TLS settings (no client certificate, one of another CA, expired, revoked or for another role; a server
certificate the DSN's CA does not sign or that names another host) are made by this one. It is
`own_cluster.cluster_of_its_own` (migrated, role passwords set) with `ssl = on`, a server certificate of
`server_ca`, client certificates checked against `client_ca` and its revocation list, and pg_hba.conf:

    host    all tokenvault_admin 127.0.0.1/32 scram-sha-256                          (the tests' own way in)
    hostssl all all              127.0.0.1/32 scram-sha-256 clientcert=verify-full     (a certificate named as the role)
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from devstack.certs import Authority, CertPair, create_authority, issue, write_revocation_list
from devstack.planted_links import write_in_foreign_dir
from devstack.postgres import Postgres
from tests.integration.own_cluster import cluster_of_its_own

SERVER_NAME = "localhost"
_FOLDERS = itertools.count()
_HBA = """\
local   all all                           scram-sha-256
host    all tokenvault_admin 127.0.0.1/32 scram-sha-256
hostssl all all              127.0.0.1/32 scram-sha-256 clientcert=verify-full
"""


@dataclass(frozen=True)
class TlsCluster:
    """The running cluster, its two CAs and the ETL's good client certificate (CN tokenvault_etl)."""

    postgres: Postgres
    directory: Path
    server_ca: Authority
    client_ca: Authority
    etl_certificate: CertPair

    def etl_dsn(self, **settings: str) -> str:
        """The ETL's DSN with TLS verified both ways (verify-full, its certificate), `settings` replacing any."""
        good = {
            "host": SERVER_NAME,
            "sslmode": "verify-full",
            "sslrootcert": str(self.server_ca.cert_path),
            "sslcert": str(self.etl_certificate.cert),
            "sslkey": str(self.etl_certificate.key),
        }
        return make_conninfo(self.postgres.etl_dsn, **{**good, **settings})

    def client_certificate(
        self, name: str, authority: Authority | None = None, validity: datetime.timedelta | None = None
    ) -> CertPair:
        """A client certificate for CN `name` (of `authority`, by default the cluster's client CA)."""
        signer = authority or self.client_ca
        folder = self.directory / f"client-{next(_FOLDERS)}"  # no ':' in the path: libpq reads it as an engine
        return issue(signer, folder, name, validity=validity or datetime.timedelta(days=1))

    def revoke(self, serials: Sequence[int]) -> None:
        """Revoke `serials` in the cluster's CRL and reload it."""
        crl = self.directory / "crl.pem"
        write_revocation_list(self.client_ca, serials, crl)
        self._install("client-crl.pem", crl.read_text())
        self._reload()

    def _install(self, name: str, text: str) -> None:
        write_in_foreign_dir(self.postgres.data_dir / name, text, owner=self.postgres.run_as)

    def _reload(self) -> None:
        with psycopg.connect(self.postgres.admin_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")


@contextlib.contextmanager
def tls_cluster(state_dir: Path) -> Iterator[TlsCluster]:
    """A cluster under `state_dir` requiring TLS and a client certificate; stopped and deleted after."""
    with cluster_of_its_own(state_dir) as postgres:
        directory = state_dir / "pg-tls"
        server_ca = create_authority(directory / "server-ca", name="etl50 postgres server CA")
        client_ca = create_authority(directory / "client-ca", name="etl50 postgres client CA")
        server = issue(server_ca, directory / "server-ca", "postgres-server", server=True, server_names=(SERVER_NAME,))
        etl = issue(client_ca, directory / "client-ca", "tokenvault_etl")
        cluster = TlsCluster(postgres, directory, server_ca, client_ca, etl)
        write_revocation_list(client_ca, [], directory / "crl.pem")
        for name, source in (
            ("server.pem", server.cert),
            ("server-key.pem", server.key),
            ("client-ca.pem", client_ca.cert_path),
            ("client-crl.pem", directory / "crl.pem"),
        ):
            cluster._install(name, source.read_text())
        cluster._install("pg_hba.conf", _HBA)
        with psycopg.connect(postgres.admin_dsn, autocommit=True) as conn:
            for setting, value in (
                ("ssl_cert_file", "server.pem"),
                ("ssl_key_file", "server-key.pem"),
                ("ssl_ca_file", "client-ca.pem"),
                ("ssl_crl_file", "client-crl.pem"),
                ("ssl", "on"),
            ):
                conn.execute(f"ALTER SYSTEM SET {setting} = '{value}'")
        cluster._reload()
        yield cluster
