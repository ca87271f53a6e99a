"""Kubernetes: the vault pod's Vault agent renders the DSN; the service's own token may not mint database logins.

Attack 32, F7: the vault pod's agent token (`agent-inject-token`, read by the service as TOKENVAULT_VAULT_TOKEN) could
read `database/creds/tokenvault-vault`, so whoever held it minted logins of tokenvault_vault until no connection
slot was left. Now the agent keeps its token (policy config/vault/tokenvault-vault-agent.hcl) and renders the ids of
AppRole tokenvault-service; the service logs in with them (policy tokenvault-service.hcl: Transit only). Here on
an OpenBao of the test's own (the stack's binary), set up as docs/production.md says: the deployment's own agent
templates are fetched with the agent's policy, the service's login code logs in with what they render, and that
token uses its KEK but may not read the creds path (nor the agent's AppRole paths); the agent's token uses no
Transit.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest
import yaml

from devstack.openbao import start_openbao
from devstack.procs import stop_pid
from vault_service.adapters.transit import connect_vault

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = REPO / "deploy" / "k8s" / "vault-service" / "deployment.yaml"
POLICIES = REPO / "config" / "vault"
_SECRET = re.compile(r'with secret "([^"]+)"((?: "[^"]+")*)')
CREDS = "database/creds/tokenvault-vault"


def agent_calls() -> list[tuple[str, dict[str, str]]]:
    """(path, write parameters) of each AppRole secret the vault's agent templates fetch; no parameters: a read."""
    annotations = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["metadata"]["annotations"]
    calls = []
    for key, template in annotations.items():
        if key.startswith("vault.hashicorp.com/agent-inject-template-"):
            for path, params in _SECRET.findall(template):
                if path.startswith("auth/approle/"):
                    calls.append((path, dict(p.split("=", 1) for p in re.findall(r'"([^"]+)"', params))))
    return calls


def _capabilities(client: hvac.Client, path: str) -> list[str]:
    reply: dict[str, Any] = client.adapter.post("/v1/sys/capabilities-self", json={"paths": [path]})
    return list(reply.get("data", reply)[path])


@pytest.mark.timeout(60)
def test_the_vaults_own_token_comes_from_its_approle_and_may_not_mint_database_logins(tmp_path: Path) -> None:
    bao = start_openbao(tmp_path / "openbao.log", tmp_path / "bao")
    try:
        root = hvac.Client(url=bao.address, token=bao.root_token)
        root.sys.enable_secrets_engine("transit", path="transit")
        root.write_data("transit/keys/tokenvault", data={"type": "aes256-gcm96"})
        root.sys.enable_auth_method("approle")
        for name in ("tokenvault-service", "tokenvault-vault-agent"):
            root.sys.create_or_update_policy(name, (POLICIES / f"{name}.hcl").read_text())
        root.write_data(  # docs/production.md step 2 (Kubernetes)
            "auth/approle/role/tokenvault-service",
            data={"token_policies": "tokenvault-service", "token_ttl": "1h", "token_max_ttl": "24h",
                  "secret_id_ttl": "24h"},
        )  # fmt: skip
        agent = hvac.Client(
            url=bao.address, token=root.auth.token.create(policies=["tokenvault-vault-agent"])["auth"]["client_token"]
        )
        calls = agent_calls()
        assert {path for path, _ in calls} == {
            "auth/approle/role/tokenvault-service/role-id",
            "auth/approle/role/tokenvault-service/secret-id",
        }
        rendered: dict[str, Any] = {}
        for path, params in calls:  # as the agent does: a read, or a write with the template's parameters
            rendered |= (agent.write_data(path, data=params) if params else agent.read(path))["data"]
        secret_id_file = tmp_path / "vault-secret-id"
        secret_id_file.write_text(rendered["secret_id"])
        service = connect_vault(bao.address, role_id=rendered["role_id"], secret_id_file=secret_id_file)
        key = service.write_data("transit/datakey/plaintext/tokenvault", data={})["data"]
        assert key["plaintext"] and key["ciphertext"].startswith("vault:v1:")
        seen = {
            "service": {path: _capabilities(service, path) for path in (CREDS, calls[0][0], calls[1][0])},
            "agent": {path: _capabilities(agent, path) for path in (CREDS, "transit/datakey/plaintext/tokenvault")},
        }
        with pytest.raises(hvac.exceptions.Forbidden):
            service.read(CREDS)
        with pytest.raises(hvac.exceptions.Forbidden):
            agent.write_data("transit/datakey/plaintext/tokenvault", data={})
    finally:
        stop_pid(bao.pid)
    print(f"VAULT-K8S-LOGIN: capabilities {seen}")
    assert all(caps == ["deny"] for caps in seen["service"].values()), seen
    assert seen["agent"] == {CREDS: ["read"], "transit/datakey/plaintext/tokenvault": ["deny"]}, seen
