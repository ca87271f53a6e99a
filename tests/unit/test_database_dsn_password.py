"""Which database DSNs the services refuse at start: those that could send their password to an impostor.

tokenvault_common.database_dsn (attack 25, review 28): a DSN that may reach the server over TCP (or
names a service, whose entry can add a host, a hostaddr and a password) needs `sslmode=verify-full`
(or `sslrootcert=system`), a `require_auth` that refuses password and md5, or `channel_binding=require`,
whether or not a password is visible (libpq also reads ~/.pgpass and service files); only a DSN over
unix sockets alone, naming no service, whose socket directory no other local user can write to (review 29,
F4; else require_auth), is not concerned. Every DSN shipped (compose, the Kubernetes
manifests' Vault-agent templates, the embedded stack's) passes; the refusal names the variable and the
fix, never the password. What real libpq resolves is in tests/integration/test_database_dsn_resolved.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devstack.postgres import REQUIRE_AUTH
from etl_service.config import EtlConfig
from tests.unit.etl_builders import minimal_etl_env
from tests.unit.vault_settings import vault_env
from tokenvault_common.database_dsn import password_exposed
from tokenvault_common.env import ConfigError
from vault_service.config import VaultServiceConfig

REPO = Path(__file__).resolve().parents[2]
V = "TOKENVAULT_DATABASE_DSN"


def _shipped() -> list[str]:
    """Every DSN of compose and of the Kubernetes manifests, placeholders (`${X}`, `{{ .Data.x }}`) filled first."""
    compose = (REPO / "docker-compose.yml").read_text()
    manifests = "\n".join(p.read_text() for p in sorted((REPO / "deploy/k8s").rglob("*.yaml")))
    filled = re.sub(r"\$\{[^}]+\}|\{\{[^}]+\}\}", "secret", compose + "\n" + manifests)
    found = re.findall(r"(postgresql://[^\s\"']+)", filled)
    return [dsn for dsn in found if "postgres:postgres@exercise-postgres" not in dsn]  # that image's public login


def test_every_dsn_shipped_passes() -> None:
    shipped = _shipped()
    kubernetes = [dsn for dsn in shipped if "@postgres.tokenvault-data.svc:" in dsn]
    # the Deployment, the ETL, the admin Job (review 28, F6), the lock watchdog (migration 0048)
    assert len(shipped) >= 7 and len(kubernetes) == 4, shipped
    assert all(dsn.startswith("postgresql://secret:secret@") for dsn in kubernetes), kubernetes
    assert [dsn for dsn in shipped if password_exposed(V, dsn, {})] == []


def test_the_embedded_stack_s_dsns_pass() -> None:
    """devstack/postgres.py's DSNs: 127.0.0.1 with its REQUIRE_AUTH (every integration test starts with them)."""
    assert password_exposed(V, f"postgresql://tokenvault_vault:pw@127.0.0.1:5432/tokenvault?{REQUIRE_AUTH}", {}) is None


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://vault:pw@127.0.0.1:5432/tokenvault",
        "postgresql://vault:pw@db/tokenvault?sslmode=require",
        "postgresql://vault:pw@db/tokenvault?sslmode=verify-ca",
        "postgresql://vault:pw@db/tokenvault?require_auth=password",
        "postgresql://vault:pw@db/tokenvault?require_auth=md5,scram-sha-256",
        "postgresql://vault:pw@db/tokenvault?require_auth=!password",
        "postgresql://vault:pw@db/tokenvault?channel_binding=prefer",
        "host=db user=vault password=pw dbname=tokenvault",
        "host=/run/postgresql,db user=vault password=pw dbname=tokenvault",
        "host=/run/postgresql hostaddr=10.0.0.5 user=vault password=pw",
        "postgresql://vault@db/tokenvault?passfile=/secrets/pgpass",
        "postgresql://vault@db/tokenvault",  # a default ~/.pgpass (review 28, F1), or trust authentication
        "service=tv user=vault dbname=tokenvault",  # the service's entry: host=db, password=...
        "host=/run/postgresql service=tv user=vault password=pw",  # its entry's hostaddr makes it TCP
        "postgresql:///tokenvault?service=tv&require_auth=password",
        "host=db user=vault password=pw sslrootcert=/etc/ca.pem",
    ],
)
def test_a_password_that_could_go_to_an_impostor_is_refused(dsn: str) -> None:
    problem = password_exposed(V, dsn, {})
    assert problem is not None and problem.startswith(f"{V} may reach the database over TCP")
    assert "sslmode=verify-full" in problem and "require_auth=scram-sha-256" in problem
    assert ":pw@" not in problem and "password=pw" not in problem


@pytest.mark.parametrize(
    ("dsn", "env"),
    [
        ("user=vault dbname=tokenvault", {"PGSERVICE": "tv"}),
        ("host=/run/postgresql user=vault", {"PGSERVICE": "tv"}),
        # A service's entry takes precedence over the PG* variables: they protect nothing then.
        ("service=tv user=vault", {"PGSSLMODE": "verify-full"}),
        ("user=vault", {"PGSERVICE": "tv", "PGREQUIREAUTH": "scram-sha-256"}),
        ("service=tv user=vault require_auth=", {"PGREQUIREAUTH": "scram-sha-256"}),
    ],
)
def test_a_named_service_is_never_exempt_review28(dsn: str, env: dict[str, str]) -> None:
    assert password_exposed(V, dsn, env) is not None


@pytest.mark.parametrize(
    ("dsn", "env"),
    [
        ("host=/run/postgresql user=vault dbname=tokenvault", {}),  # peer
        ("host=/run/postgresql user=vault", {"PGPASSFILE": "/secrets/pgpass"}),  # the unix socket only
        ("host=/run/postgresql user=vault password=pw dbname=tokenvault", {}),  # the unix socket only
        ("postgresql://vault:pw@/tokenvault", {}),  # libpq's default host: the socket
        ("postgresql://vault:pw@db/tokenvault?sslmode=verify-full", {}),
        ("postgresql://vault:pw@db/tokenvault?require_auth=scram-sha-256", {}),
        ("postgresql://vault:pw@db/tokenvault?require_auth=!password,!md5", {}),
        ("postgresql://vault:pw@db/tokenvault?sslmode=require&channel_binding=require", {}),
        ("postgresql://vault:pw@db/tokenvault", {"PGREQUIREAUTH": "scram-sha-256"}),
        ("postgresql://vault:pw@db/tokenvault", {"PGSSLMODE": "verify-full"}),
        ("postgresql://vault@db/tokenvault?sslmode=verify-full", {}),  # a client certificate
        ("postgresql://vault:pw@db/tokenvault?sslrootcert=system", {}),  # libpq 16+: verify-full (review 28, F5)
        ("postgresql://vault:pw@db/tokenvault", {"PGSSLROOTCERT": "system"}),
        ("service=tv user=vault sslmode=verify-full", {}),  # the DSN's own value beats the service's entry
        ("service=tv user=vault require_auth=scram-sha-256", {"PGSSLMODE": "disable"}),
    ],
)
def test_a_dsn_that_keeps_its_password_or_has_none_passes(dsn: str, env: dict[str, str]) -> None:
    assert password_exposed(V, dsn, env) is None


def test_a_password_from_the_environment_counts() -> None:
    assert password_exposed(V, "postgresql://vault@db/tokenvault", {"PGPASSWORD": "pw"}) is not None
    assert password_exposed(V, "postgresql://vault@/tokenvault", {"PGHOST": "/run/postgresql"}) is None
    assert password_exposed(V, "postgresql://vault@/tokenvault", {"PGHOST": "db"}) is not None


def test_both_services_stop_at_start_naming_their_variable(tmp_path: Path) -> None:
    bad = "postgresql://u:hunter2@db/app"
    with pytest.raises(ConfigError, match="TOKENVAULT_DATABASE_DSN may reach the database over TCP") as vault:
        VaultServiceConfig.from_env({**vault_env(tmp_path), "TOKENVAULT_DATABASE_DSN": bad})
    with pytest.raises(ConfigError, match="ETL_DATABASE_DSN may reach the database over TCP") as etl:
        EtlConfig.from_env({**minimal_etl_env(tmp_path, "http://127.0.0.1:9/1/q"), "ETL_DATABASE_DSN": bad})
    assert "hunter2" not in str(vault.value) + str(etl.value)


@pytest.mark.parametrize("mode", [0o1777, 0o777, 0o757])
def test_a_socket_directory_others_can_write_to_needs_require_auth_review29(tmp_path: Path, mode: int) -> None:
    """Another local user can put a socket in /tmp (sticky or not) while PostgreSQL is down and catch the password."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    for dsn, env in [
        (f"host={shared} user=vault password=pw dbname=tokenvault", {}),
        (f"host={shared}/not-yet user=vault dbname=tokenvault", {}),  # others can create it
        ("user=vault dbname=tokenvault", {"PGHOST": str(shared)}),
        (f"host={shared} user=vault sslmode=verify-full", {}),  # TLS does nothing over a socket
        (f"host={shared} user=vault require_auth=password", {}),
        (f"host={tmp_path},{shared} user=vault", {}),
    ]:
        problem = password_exposed(V, dsn, env)
        assert problem is not None and problem.startswith(f"{V} may reach the database over a unix socket in {shared}")
        assert "require_auth=scram-sha-256" in problem and "only PostgreSQL's account can write to" in problem
        assert "password=pw" not in problem
    assert password_exposed(V, f"host={shared} user=vault password=pw require_auth=scram-sha-256", {}) is None
    assert password_exposed(V, f"host={shared} user=vault", {"PGREQUIREAUTH": "scram-sha-256"}) is None
    assert password_exposed(V, f"host={shared} hostaddr=127.0.0.1 user=vault require_auth=scram-sha-256", {}) is None


def test_a_private_socket_directory_and_an_abstract_socket_review29(tmp_path: Path) -> None:
    """A directory only its owner and group write is exempt as before; an abstract socket's name anyone binds first."""
    private = tmp_path / "private"
    private.mkdir(mode=0o2775)
    private.chmod(0o2775)
    assert password_exposed(V, f"host={private} user=vault password=pw dbname=tokenvault", {}) is None
    assert password_exposed(V, f"host={private}/sub user=vault password=pw dbname=tokenvault", {}) is None
    problem = password_exposed(V, "host=@tokenvault user=vault password=pw", {})
    assert problem is not None and "abstract unix socket" in problem
    assert password_exposed(V, "host=@tokenvault user=vault require_auth=scram-sha-256", {}) is None


def test_the_vault_stops_at_start_on_a_socket_in_a_shared_directory(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    dsn = f"host={shared} user=vault password=hunter2 dbname=tokenvault"
    with pytest.raises(ConfigError, match="TOKENVAULT_DATABASE_DSN may reach the database over a unix socket") as vault:
        VaultServiceConfig.from_env({**vault_env(tmp_path), "TOKENVAULT_DATABASE_DSN": dsn})
    assert "hunter2" not in str(vault.value)
