"""No DSN of the stack hands its password to whatever listens on Postgres's port.

Fourth insider round, MED-3: while the stack's Postgres was down, a local user (`nobody`)
listening on 127.0.0.1:PORT asked each connecting client for a cleartext password, and libpq
sent it: the vault's role then erased tokens directly, bypassing certificates and the erase
budget. Every DSN the embedded stack writes, and compose's, now carries
`require_auth=scram-sha-256`. Here each is pointed at an impostor that asks for the password in
clear (or as MD5): the connection fails and the impostor receives no password message. `make
psql` (devstack/psql.py), whose psql may predate require_auth, goes through the cluster's
private Unix socket instead and still gets in.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from devstack.envfile import write_env_file
from devstack.stack import etl_service_env, vault_service_env
from tests.unit.test_compose_file import resolved

_SSL_OR_GSS_REQUEST = (80877103, 80877104)
_CLEARTEXT, _MD5 = 3, 5  # AuthenticationCleartextPassword, AuthenticationMD5Password


@dataclass
class Impostor:
    """A listener that answers every StartupMessage with a password request of `auth` and records replies."""

    auth: int
    port: int = 0
    startups: int = 0
    replies: list[bytes] = field(default_factory=list)
    """The type byte of each message a client sent after the password request ('p': a password)."""


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _serve_one(conn: socket.socket, impostor: Impostor) -> None:
    length, code = struct.unpack("!ii", _recv_exact(conn, 8))
    while code in _SSL_OR_GSS_REQUEST:  # no TLS, no GSS: as a plain listener would answer
        conn.sendall(b"N")
        length, code = struct.unpack("!ii", _recv_exact(conn, 8))
    _recv_exact(conn, length - 8)  # the startup parameters (user, database)
    impostor.startups += 1
    salt = b"salt" if impostor.auth == _MD5 else b""
    conn.sendall(b"R" + struct.pack("!ii", 8 + len(salt), impostor.auth) + salt)
    reply = conn.recv(1)
    if reply:
        impostor.replies.append(reply)


@pytest.fixture(params=[_CLEARTEXT, _MD5], ids=["cleartext", "md5"])
def impostor(request: pytest.FixtureRequest) -> Iterator[Impostor]:
    """An impostor on a free loopback port, as another local user runs it while Postgres is down."""
    fake = Impostor(request.param)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    fake.port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError, EOFError):
                conn.settimeout(5)
                _serve_one(conn, fake)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield fake
    stop.set()
    thread.join(5)
    server.close()


def _stack_dsns(env: dict[str, str]) -> dict[str, str]:
    """Every DSN the embedded stack writes (stack.env) or gives its services."""
    services = {**vault_service_env(env), **etl_service_env(env)}
    return {k: v for k, v in {**env, **services}.items() if k.endswith("_DSN")}


def _compose_dsns(tmp_path: Path) -> dict[str, str]:
    """The DSNs of compose's main stack (the exercise profile's own Postgres is that image's, see README)."""
    found = {}
    for name, service in resolved(tmp_path)["services"].items():
        if "exercise" in service.get("profiles", []):
            continue
        for key, value in (service.get("environment") or {}).items():
            if str(value).startswith("postgresql://"):
                found[f"{name}:{key}"] = str(value)
    return found


def _refused_without_password(dsns: dict[str, str], impostor: Impostor) -> None:
    for name, dsn in dsns.items():
        before = impostor.startups
        with pytest.raises(psycopg.OperationalError, match="scram-sha-256"):
            psycopg.connect(make_conninfo(dsn, host="127.0.0.1", port=impostor.port, connect_timeout=5)).close()
        assert impostor.startups == before + 1, f"{name} did not reach the impostor"
    assert b"p" not in impostor.replies, f"a password was sent to the impostor ({len(impostor.replies)} replies)"


def test_no_dsn_of_the_embedded_stack_gives_its_password_to_an_impostor(
    stack_env: dict[str, str], impostor: Impostor
) -> None:
    dsns = _stack_dsns(stack_env)
    assert {"PG_ADMIN_DSN", "PG_VAULT_DSN", "PG_ETL_DSN", "PG_ANALYST_DSN", "TOKENVAULT_DATABASE_DSN"} <= dsns.keys()
    _refused_without_password(dsns, impostor)
    for dsn in dsns.values():  # and the genuine server still lets each in
        psycopg.connect(dsn, connect_timeout=5).close()


def test_no_dsn_of_the_compose_stack_gives_its_password_to_an_impostor(tmp_path: Path, impostor: Impostor) -> None:
    dsns = _compose_dsns(tmp_path)
    assert {"migrate:MIGRATIONS_DSN", "vault-service:TOKENVAULT_DATABASE_DSN", "etl-service:ETL_DATABASE_DSN"} <= (
        dsns.keys()
    )
    _refused_without_password(dsns, impostor)


def test_make_psql_gets_in_as_the_analyst_and_the_admin_with_the_system_s_psql(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    # The session stack keeps its env in memory: give devstack.psql the files `make up` writes.
    (tmp_path / "state.json").write_text((Path(stack_env["STACK_DIR"]) / "state.json").read_text())
    write_env_file(tmp_path / "stack.env", stack_env)
    for role, expected in (("analyst", "analyst"), ("admin", "tokenvault_admin")):
        result = subprocess.run(
            [sys.executable, "-m", "devstack.psql", role, "-XAtc", "SELECT current_user"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "TOKENVAULT_STACK_DIR": str(tmp_path)},
            timeout=30,
        )
        assert (result.returncode, result.stdout.strip()) == (0, expected), result.stderr[-500:]
