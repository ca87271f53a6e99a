"""The start check refuses a DSN exactly when real libpq would give an impostor a password (review 28, F1, F5).

libpq fills what a DSN leaves out from a named service's entry (`service=` or `PGSERVICE`, from
`PGSERVICEFILE`, `~/.pg_service.conf` or `PGSYSCONFDIR/pg_service.conf`: host, hostaddr, port,
password), then from `PG*` variables and `~/.pgpass`. The check read only the DSN and the variables,
so each F1 case below passed it and sent the password in clear. Each case is connected with psycopg
(the services' libpq) to an impostor asking for the password in clear: whether the password went is
libpq's answer, and the check must refuse the DSN exactly then. The safe cases pass: `sslrootcert=system`
(libpq 16+ forces verify-full, F5), a DSN whose own `require_auth` overrides its service's entry.
A service's entry takes precedence over the variables: `PGSSLMODE=verify-full` protects nothing then.
A keyword the DSN has, even empty, takes precedence over its variable (attack 27, F4: an empty
`sslrootcert=` over `PGSSLROOTCERT=system` passed the check and libpq sent the password in clear).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.fake_postgres import CLEARTEXT, Impostor, serving
from tokenvault_common.database_dsn import password_exposed

V = "TOKENVAULT_DATABASE_DSN"
TCP = "host=127.0.0.1 port={port} user=vault dbname=tokenvault"
CASES = {
    # name: (DSN, environment; {port} and {tmp} filled in)
    "service= in PGSERVICEFILE": ("service=tv user=vault dbname=tokenvault", {"PGSERVICEFILE": "{tmp}/svc.conf"}),
    "PGSERVICE": ("user=vault dbname=tokenvault", {"PGSERVICE": "tv", "PGSERVICEFILE": "{tmp}/svc.conf"}),
    "service= in PGSYSCONFDIR": ("service=tv user=vault dbname=tokenvault", {"PGSYSCONFDIR": "{tmp}/etc"}),
    "service= in ~/.pg_service.conf": ("service=tv user=vault dbname=tokenvault", {"HOME": "{tmp}/home"}),
    "a unix host made TCP by the service's hostaddr": (
        "host=/nonexistent service=tvaddr user=vault password=pw dbname=tokenvault",
        {"PGSERVICEFILE": "{tmp}/svc.conf"},
    ),
    "PGSSLMODE=verify-full under a service's sslmode=prefer": (
        "service=tvprefer user=vault dbname=tokenvault",
        {"PGSERVICEFILE": "{tmp}/svc.conf", "PGSSLMODE": "verify-full"},
    ),
    "a default ~/.pgpass": (TCP, {"HOME": "{tmp}/home"}),
    "an empty sslrootcert= over PGSSLROOTCERT=system": (
        TCP + " password=pw sslrootcert=''",
        {"PGSSLROOTCERT": "system"},
    ),
    "an empty ?sslrootcert= over PGSSLROOTCERT=system": (
        "postgresql://vault:pw@127.0.0.1:{port}/tokenvault?sslrootcert=",
        {"PGSSLROOTCERT": "system"},
    ),
    "safe: sslrootcert=system": (TCP + " password=pw sslrootcert=system", {}),
    "safe: PGSSLROOTCERT=system": (TCP + " password=pw", {"PGSSLROOTCERT": "system"}),
    "safe: the DSN's require_auth over its service's": (
        "service=tv user=vault dbname=tokenvault require_auth=scram-sha-256",
        {"PGSERVICEFILE": "{tmp}/svc.conf"},
    ),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Impostor, Path]]:
    """An impostor asking for the password in clear, and the files that lead libpq to it (one for the module)."""
    tmp = tmp_path_factory.mktemp("libpq")
    with serving(Impostor(auth=CLEARTEXT)) as fake:
        entry = f"host=127.0.0.1\nport={fake.port}\npassword=from-service\n"
        (tmp / "svc.conf").write_text(
            f"[tv]\n{entry}[tvaddr]\nhostaddr=127.0.0.1\nport={fake.port}\n[tvprefer]\n{entry}sslmode=prefer\n"
        )
        (tmp / "etc").mkdir()
        (tmp / "etc/pg_service.conf").write_text(f"[tv]\n{entry}")
        home = tmp / "home"
        home.mkdir()
        (home / ".pg_service.conf").write_text(f"[tv]\n{entry}")
        (home / ".pgpass").write_text("*:*:*:*:from-pgpass\n")
        (home / ".pgpass").chmod(0o600)
        yield fake, tmp


@pytest.mark.parametrize("case", CASES)
def test_the_check_refuses_what_libpq_would_give_an_impostor(
    case: str, files: tuple[Impostor, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    impostor, tmp_path = files
    impostor.replies.clear()
    template, env_template = CASES[case]
    dsn = template.format(port=impostor.port)
    env = {"HOME": str(tmp_path / "nohome"), **{k: v.format(tmp=tmp_path) for k, v in env_template.items()}}
    for name in [name for name in os.environ if name.startswith("PG")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with contextlib.suppress(psycopg.Error):
        psycopg.connect(dsn, connect_timeout=5).close()
    leaked = b"p" in impostor.replies
    assert leaked != case.startswith("safe:"), f"libpq {'sent' if leaked else 'kept'} the password"
    problem = password_exposed(V, dsn, env)
    assert (problem is not None) == leaked, problem
