"""Which database DSNs the services refuse at start: those that could send their password to an impostor.

tokenvault_common.database_dsn (attack 25): a DSN holding a password needs `sslmode=verify-full`, a
`require_auth` that refuses password and md5, or `channel_binding=require`; a DSN without a
password, or reaching the server only over unix sockets, is not concerned. Every DSN shipped (compose,
the Kubernetes manifests) passes; the refusal names the variable and the fix, never the password.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from etl_service.config import EtlConfig
from tests.unit.etl_builders import minimal_etl_env
from tests.unit.vault_settings import vault_env
from tokenvault_common.database_dsn import password_exposed
from tokenvault_common.env import ConfigError
from vault_service.config import VaultServiceConfig

REPO = Path(__file__).resolve().parents[2]
V = "TOKENVAULT_DATABASE_DSN"


def _shipped() -> list[str]:
    """Every password DSN of compose and of the Kubernetes manifests, placeholders filled."""
    compose = (REPO / "docker-compose.yml").read_text()
    manifests = "\n".join(p.read_text() for p in sorted((REPO / "deploy/k8s").rglob("*.yaml")))
    found = re.findall(r"(postgresql://[^\s\"']+)", compose + "\n" + manifests)
    filled = [re.sub(r"\$\{[^}]+\}|\{\{[^}]+\}\}", "secret", dsn) for dsn in found]
    return [dsn for dsn in filled if "postgres:postgres@exercise-postgres" not in dsn]  # that image's public login


def test_every_dsn_shipped_passes() -> None:
    shipped = _shipped()
    assert len(shipped) >= 6, shipped
    assert [dsn for dsn in shipped if password_exposed(V, dsn, {})] == []


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
    ],
)
def test_a_password_that_could_go_to_an_impostor_is_refused(dsn: str) -> None:
    problem = password_exposed(V, dsn, {})
    assert problem is not None and problem.startswith(f"{V} holds a database password")
    assert "require_auth=scram-sha-256" in problem and ":pw@" not in problem and "password=pw" not in problem


@pytest.mark.parametrize(
    ("dsn", "env"),
    [
        ("postgresql://vault@db/tokenvault", {}),  # certificate or trust authentication: no password to give
        ("host=/run/postgresql user=vault dbname=tokenvault", {}),  # peer
        ("host=/run/postgresql user=vault password=pw dbname=tokenvault", {}),  # the unix socket only
        ("postgresql://vault:pw@/tokenvault", {}),  # libpq's default host: the socket
        ("postgresql://vault:pw@db/tokenvault?sslmode=verify-full", {}),
        ("postgresql://vault:pw@db/tokenvault?require_auth=scram-sha-256", {}),
        ("postgresql://vault:pw@db/tokenvault?require_auth=!password,!md5", {}),
        ("postgresql://vault:pw@db/tokenvault?sslmode=require&channel_binding=require", {}),
        ("postgresql://vault:pw@db/tokenvault", {"PGREQUIREAUTH": "scram-sha-256"}),
        ("postgresql://vault:pw@db/tokenvault", {"PGSSLMODE": "verify-full"}),
    ],
)
def test_a_dsn_that_keeps_its_password_or_has_none_passes(dsn: str, env: dict[str, str]) -> None:
    assert password_exposed(V, dsn, env) is None


def test_a_password_from_the_environment_counts() -> None:
    assert password_exposed(V, "postgresql://vault@db/tokenvault", {"PGPASSWORD": "pw"}) is not None
    assert password_exposed(V, "postgresql://vault@db/tokenvault", {"PGHOST": "/run/postgresql"}) is None


def test_both_services_stop_at_start_naming_their_variable(tmp_path: Path) -> None:
    bad = "postgresql://u:hunter2@db/app"
    with pytest.raises(ConfigError, match="TOKENVAULT_DATABASE_DSN holds a database password") as vault:
        VaultServiceConfig.from_env({**vault_env(tmp_path), "TOKENVAULT_DATABASE_DSN": bad})
    with pytest.raises(ConfigError, match="ETL_DATABASE_DSN holds a database password") as etl:
        EtlConfig.from_env({**minimal_etl_env(tmp_path, "http://127.0.0.1:9/1/q"), "ETL_DATABASE_DSN": bad})
    assert "hunter2" not in str(vault.value) + str(etl.value)
