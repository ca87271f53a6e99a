"""The service's Vault login against real OpenBao: the AppRole secret id expires, has a use
limit and is bound to loopback, and so is the token it yields (both used from another address:
refused); the service renews its token and logs in again by itself."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from devstack.openbao import SERVICE_ROLE, OpenBao, TransitSetup, configure_transit, start_openbao
from vault_service.adapters.transit import TransitKeyWrapper, VaultStartupError, connect_vault, open_session


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OpenBao, TransitSetup]]:
    directory = tmp_path_factory.mktemp("bao-login")
    server = start_openbao(directory / "openbao.log")
    try:
        yield server, configure_transit(server, directory / "secrets")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, signal.SIGKILL)


def short_role(bao: OpenBao, name: str, **limits: Any) -> tuple[str, hvac.Client]:
    """A role like the service's (same policy) with the given limits; (role_id, root client)."""
    root = hvac.Client(url=bao.address, token=bao.root_token)
    root.auth.approle.create_or_update_approle(name, token_policies=["tokenvault-service"], **limits)
    return root.auth.approle.read_role_id(name)["data"]["role_id"], root


def secret_file(root: hvac.Client, role: str, directory: Path, **options: Any) -> Path:
    path = directory / f"{role}-secret-id"
    path.write_text(root.auth.approle.generate_secret_id(role, **options)["data"]["secret_id"])
    return path


def test_the_stack_role_limits_the_secret_id_and_binds_it_to_loopback(bao: tuple[OpenBao, TransitSetup]) -> None:
    server, transit = bao
    root = hvac.Client(url=server.address, token=server.root_token)
    role = root.auth.approle.read_role(SERVICE_ROLE)["data"]
    assert role["secret_id_ttl"] == 720 * 3600 and role["secret_id_num_uses"] == 100
    assert (role["token_ttl"], role["token_max_ttl"]) == (3600, 24 * 3600)
    assert role["secret_id_bound_cidrs"] == ["127.0.0.1/32"] and role["token_bound_cidrs"] == [
        "127.0.0.1"
    ]  # OpenBao shows a /32 as the address
    accessor_lookup = root.auth.approle.read_secret_id(SERVICE_ROLE, transit.secret_id_file.read_text())["data"]
    assert accessor_lookup["secret_id_ttl"] == 720 * 3600 and accessor_lookup["secret_id_num_uses"] == 100


def post_from(server: OpenBao, source: str, path: str, body: dict[str, str], token: str = "") -> tuple[int, Any]:
    """Status and JSON answer of a POST to OpenBao sent from local address `source`."""
    host, port = server.address.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5, source_address=(source, 0))
    headers = {"Content-Type": "application/json", **({"X-Vault-Token": token} if token else {})}
    try:
        connection.request("POST", path, json.dumps(body), headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def test_a_login_from_another_address_is_refused(bao: tuple[OpenBao, TransitSetup]) -> None:
    server, transit = bao
    body = {"role_id": transit.role_id, "secret_id": transit.secret_id_file.read_text()}
    assert post_from(server, "127.0.0.2", "/v1/auth/approle/login", body)[0] in (400, 403)  # another loopback address
    assert post_from(server, "127.0.0.1", "/v1/auth/approle/login", body)[0] == 200


def test_the_service_s_token_is_refused_from_another_address(bao: tuple[OpenBao, TransitSetup]) -> None:
    server, transit = bao
    body = {"role_id": transit.role_id, "secret_id": transit.secret_id_file.read_text()}
    status, answer = post_from(server, "127.0.0.1", "/v1/auth/approle/login", body)  # the service's own login
    token = answer["auth"]["client_token"]
    data_key = "/v1/transit/datakey/plaintext/tokenvault"  # what the service does with its token
    assert status == 200 and post_from(server, "127.0.0.1", data_key, {}, token)[0] == 200
    status, answer = post_from(server, "127.0.0.2", data_key, {}, token)  # the token copied to another address
    assert status == 403 and "plaintext" not in (answer.get("data") or {})


def test_the_service_renews_and_logs_in_again_past_token_max_ttl(
    bao: tuple[OpenBao, TransitSetup], tmp_path: Path
) -> None:
    server, _ = bao
    role_id, root = short_role(server, "short-token", token_ttl="2s", token_max_ttl="5s", secret_id_num_uses=5)
    secret = secret_file(root, "short-token", tmp_path)
    session = open_session(server.address, role_id=role_id, secret_id_file=secret)
    wrapper = TransitKeyWrapper(session, "tokenvault")
    fixed = connect_vault(server.address, role_id=role_id, secret_id_file=secret)  # logs in, never renews
    tokens = set()
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        assert wrapper.latest_version() >= 1  # never fails although every token lives 2-5 s
        tokens.add(session.client().token)
        time.sleep(0.25)
    assert len(tokens) >= 2  # max TTL reached: logged in again
    with pytest.raises(hvac.exceptions.Forbidden):  # a token nobody renews is dead by now
        fixed.secrets.transit.read_key(name="tokenvault")
    uses_left = root.auth.approle.read_secret_id("short-token", secret.read_text())["data"]["secret_id_num_uses"]
    assert 5 - uses_left == len(tokens) + 1  # one use per login, renewals use none


def test_an_expired_secret_id_is_refused(bao: tuple[OpenBao, TransitSetup], tmp_path: Path) -> None:
    server, _ = bao
    role_id, root = short_role(server, "short-secret", secret_id_ttl="2s")
    secret = secret_file(root, "short-secret", tmp_path)
    connect_vault(server.address, role_id=role_id, secret_id_file=secret)
    time.sleep(3)
    with pytest.raises(VaultStartupError, match="refused login"):
        connect_vault(server.address, role_id=role_id, secret_id_file=secret)


def test_a_used_up_secret_id_is_refused(bao: tuple[OpenBao, TransitSetup], tmp_path: Path) -> None:
    server, _ = bao
    role_id, root = short_role(server, "few-uses", secret_id_num_uses=2)
    secret = secret_file(root, "few-uses", tmp_path)
    for _ in range(2):
        connect_vault(server.address, role_id=role_id, secret_id_file=secret)
    with pytest.raises(VaultStartupError, match="refused login"):
        connect_vault(server.address, role_id=role_id, secret_id_file=secret)


def test_a_replaced_secret_id_file_is_read_at_the_next_login(bao: tuple[OpenBao, TransitSetup], tmp_path: Path) -> None:
    server, _ = bao
    role_id, root = short_role(server, "replaced", token_ttl="1s", token_max_ttl="1s", secret_id_num_uses=1)
    secret = secret_file(root, "replaced", tmp_path)
    session = open_session(server.address, role_id=role_id, secret_id_file=secret)  # uses the only use
    secret.write_text(root.auth.approle.generate_secret_id("replaced")["data"]["secret_id"])  # the operator's fix
    time.sleep(1.5)
    assert TransitKeyWrapper(session, "tokenvault").latest_version() >= 1
