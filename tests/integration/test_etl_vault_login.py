"""The ETL's AppRole secret id and token work from 127.0.0.1 only, as the service's do.

Fourth insider round (other notes): the ETL's secret id for sealing dead letters had no CIDR
binding, unlike the vault service's; a copy used from another address logged in. It keeps no
use limit (the ETL logs in at every start, and a crash loop restarts it often), but the stack
binds both the secret id and the tokens it yields to 127.0.0.1 now. Against the session's real
OpenBao, with the stack's own ETL credentials.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any


def _post(
    env: dict[str, str], source: str, path: str, body: dict[str, str], token: str = ""
) -> tuple[int, dict[str, Any]]:
    """Status and JSON answer of a POST to the stack's OpenBao, sent from local address `source`."""
    host, port = env["VAULT_ADDR"].removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5, source_address=(source, 0))
    headers = {"Content-Type": "application/json", **({"X-Vault-Token": token} if token else {})}
    try:
        connection.request("POST", path, json.dumps(body), headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def _login(env: dict[str, str], source: str) -> tuple[int, str]:
    """The ETL's AppRole login from `source`: (status, token or "")."""
    secret_id = Path(env["DLQ_SEAL_SECRET_ID_FILE"]).read_text().strip()
    status, answer = _post(
        env, source, "/v1/auth/approle/login", {"role_id": env["DLQ_SEAL_ROLE_ID"], "secret_id": secret_id}
    )
    return status, (answer.get("auth") or {}).get("client_token", "")


def test_the_etl_s_secret_id_and_token_are_refused_from_another_address(stack_env: dict[str, str]) -> None:
    status, _ = _login(stack_env, "127.0.0.2")  # same machine, another loopback address
    assert status in (400, 403)
    status, token = _login(stack_env, "127.0.0.1")  # the ETL's own logins, every start, still work
    assert status == 200 and token
    seal = {"plaintext": "dGVzdA=="}  # what the ETL may do with its token: encrypt a dead letter
    path = "/v1/transit/encrypt/tokenvault-dead-letters"
    assert _post(stack_env, "127.0.0.1", path, seal, token)[0] == 200
    assert _post(stack_env, "127.0.0.2", path, seal, token)[0] in (400, 403)  # the token copied elsewhere
