"""A TLS refusal of the ETL's database connection is a misconfiguration naming the setting; a cut stays an outage.

Review 49 left them (R49-1's "Left"): a client certificate the server refuses (none sent, another CA's, expired,
revoked, naming another role), a server certificate the DSN's sslrootcert does not verify or that names another
host, certificate files libpq cannot use, an sslmode the server does not offer - psycopg 3.3 gives each no
SQLSTATE, and `database_error` took each for the database down: a login refused while the ETL ran kept it waiting
for ever with no word of the cause (etl50). Made by a real PostgreSQL that requires TLS and a client certificate
(pg_tls_cluster.py: the stack's has no TLS and its pg_hba.conf is every test's) and, for a server without TLS, the
stack's own. A connection cut (a proxy going down in front of it, a port nobody answers, a server that hangs) stays
DependencyDown.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator

import psycopg
import pytest
from cryptography import x509
from psycopg.conninfo import make_conninfo

from devstack.certs import create_authority
from devstack.events import send_events
from devstack.procs import free_port
from devstack.sqs import sqs_client
from etl_service.adapters.postgres import database_error
from etl_service.errors import DependencyDown, Misconfigured
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import dead_letter_reasons
from tests.integration.etl_landings import assert_each_event_landed_once, events
from tests.integration.etl_process import exit_within, start_etl, wait_until_landed
from tests.integration.pg_tls_cluster import TlsCluster, tls_cluster
from tests.integration.tcp_outage import TcpOutage


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    with tls_cluster(tmp_path_factory.mktemp("pg-tls")) as running:
        yield running


def _failure(dsn: str) -> DependencyDown | Misconfigured:
    with pytest.raises(psycopg.OperationalError) as raised:
        psycopg.connect(dsn, connect_timeout=3).close()
    assert getattr(raised.value, "sqlstate", None) is None  # why the text is read at all
    return database_error(raised.value)


def _certificate(cluster: TlsCluster, name: str = "tokenvault_etl", **options: object) -> dict[str, str]:
    pair = cluster.client_certificate(name, **options)  # type: ignore[arg-type]
    return {"sslcert": str(pair.cert), "sslkey": str(pair.key)}


def _open_key(cluster: TlsCluster) -> dict[str, str]:
    key = cluster.directory / "readable-key.pem"
    key.write_text(cluster.etl_certificate.key.read_text())
    key.chmod(0o644)
    return {"sslkey": str(key)}


_CASES: dict[str, tuple[Callable[[TlsCluster], dict[str, str]], str]] = {
    "no_client_certificate": (lambda c: {"sslcert": "", "sslkey": ""}, "ETL_DATABASE_DSN sends none"),
    "client_certificate_missing": (
        lambda c: {"sslcert": str(c.directory / "gone.pem")},
        "ETL_DATABASE_DSN sends none",
    ),
    "another_ca": (
        lambda c: _certificate(c, authority=create_authority(c.directory / "other-ca", "another CA")),
        "does not trust the client certificate of ETL_DATABASE_DSN",
    ),
    "expired": (
        lambda c: _certificate(c, validity=-datetime.timedelta(minutes=1)),
        "refused the client certificate of ETL_DATABASE_DSN as expired",
    ),
    "another_roles_certificate": (lambda c: _certificate(c, "analyst"), "the CN of its sslcert does not name"),
    "sslmode_disable": (lambda c: {"sslmode": "disable"}, "connect without TLS"),
    "server_of_another_ca": (
        lambda c: {"sslrootcert": str(c.client_ca.cert_path)},
        "the server's certificate is not one the sslrootcert of ETL_DATABASE_DSN verifies",
    ),
    "another_host_name": (
        lambda c: {"host": "not-the-database", "hostaddr": "127.0.0.1"},
        "does not name the host of ETL_DATABASE_DSN",
    ),
    "sslrootcert_missing": (lambda c: {"sslrootcert": "/nonexistent/ca.pem"}, "the sslrootcert file"),
    "key_readable_by_others": (_open_key, "the sslkey file of ETL_DATABASE_DSN cannot be used"),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_each_tls_refusal_is_a_misconfiguration_naming_the_setting(cluster: TlsCluster, case: str) -> None:
    settings, said = _CASES[case]
    found = _failure(cluster.etl_dsn(**settings(cluster)))
    assert isinstance(found, Misconfigured), found
    assert str(found).startswith("Postgres refused the ETL: ") and said in str(found), found


def test_a_revoked_client_certificate_is_a_misconfiguration(cluster: TlsCluster) -> None:
    pair = cluster.client_certificate("tokenvault_etl")
    dsn = cluster.etl_dsn(sslcert=str(pair.cert), sslkey=str(pair.key))
    psycopg.connect(dsn, connect_timeout=3).close()  # accepted before
    cluster.revoke([x509.load_pem_x509_certificate(pair.cert.read_bytes()).serial_number])
    try:
        found = _failure(dsn)
    finally:
        cluster.revoke([])
    assert isinstance(found, Misconfigured) and "as revoked" in str(found), found


def test_a_server_without_tls_under_a_dsn_requiring_it_is_a_misconfiguration(stack_env: dict[str, str]) -> None:
    found = _failure(make_conninfo(stack_env["PG_ETL_DSN"], sslmode="require"))  # the stack's server has no TLS
    assert isinstance(found, Misconfigured) and "the server offers no TLS" in str(found), found


def test_a_connection_cut_or_unanswered_stays_an_outage(cluster: TlsCluster) -> None:
    proxy = TcpOutage(cluster.postgres.port)
    psycopg.connect(cluster.etl_dsn(port=str(proxy.port)), connect_timeout=3).close()  # TLS through the proxy
    proxy.down()  # each connection accepted and closed at once: in the middle of the TLS request
    cut = _failure(cluster.etl_dsn(port=str(proxy.port)))
    proxy.up()
    proxy.freeze()  # accepted, nothing passed: a hung server
    hung = _failure(cluster.etl_dsn(port=str(proxy.port), connect_timeout="2"))
    proxy.up()
    unanswered = _failure(cluster.etl_dsn(port=str(free_port())))
    for found in (cut, hung, unanswered):
        assert isinstance(found, DependencyDown), found


def test_a_client_certificate_revoked_mid_run_stops_the_etl_with_exit_1_and_dead_letters_no_good_event(
    stack_env: dict[str, str], vault: RunningVault, cluster: TlsCluster
) -> None:
    """The ETL loads into the TLS cluster; its certificate is revoked and its sessions ended after 300 landed."""
    sent = events(3000, malformed_rate=0.05)
    admin, endpoint = cluster.postgres.admin_dsn, stack_env["SQS_ENDPOINT_URL"]
    env = {
        **etl_harness_env(stack_env, vault.address, visibility_timeout=20, max_receive_count=3),
        "ETL_DATABASE_DSN": cluster.etl_dsn(),
        "ETL_BATCH_SIZE": "50",
        "ETL_SHUTDOWN_GRACE_SECONDS": "5",
        "ETL_METRICS_PORT": "0",
    }
    send_events(sqs_client(endpoint), env["ETL_QUEUE_URL"], sent)
    process = start_etl(env)
    try:
        wait_until_landed(process, admin, sent, 300)
        cluster.revoke([x509.load_pem_x509_certificate(cluster.etl_certificate.cert.read_bytes()).serial_number])
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'tokenvault_etl'")
        err = exit_within(process, 60, "its certificate's revocation")
        assert process.returncode == 1, err.decode()[-2000:]
        assert b"refused the client certificate of ETL_DATABASE_DSN as revoked" in err, err.decode()[-2000:]
        unloaded = [r for r in dead_letter_reasons(endpoint, env["ETL_DLQ_URL"]) if r != "invalid_payload"]
        assert not [r for r in unloaded if r in ("dependency_unavailable", "processing_failed")], unloaded
    finally:
        if process.poll() is None:
            process.kill()
        cluster.revoke([])
    with etl_consumer(env) as etl:
        etl.wired.consumer.drain()
    assert_each_event_landed_once(admin, sent, endpoint, etl.dlq_url)
