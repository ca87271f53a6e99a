"""Kubernetes: the ETL pod's Vault agent can hand the ETL its sealing AppRole, and nothing more.

Against the real OpenBao of the test stack: a token with the agent's policy
(config/vault/tokenvault-etl-agent.hcl; in a cluster it comes from Kubernetes auth) performs the
AppRole reads and writes of the deployment's own agent templates, and the ETL's TransitSealer
seals with what they render - sealed bodies an operator can open. The agent's token itself
cannot use Transit, mint secret ids of another lifetime or reach another role.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from etl_service.adapters.transit_sealer import TransitSealer, open_sealed
from etl_service.service.sealing import read_dead_letter_body

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = REPO / "deploy" / "k8s" / "etl-service" / "deployment.yaml"
AGENT_POLICY = REPO / "config" / "vault" / "tokenvault-etl-agent.hcl"
_SECRET = re.compile(r'with secret "([^"]+)"((?: "[^"]+")*)')


def agent_calls() -> list[tuple[str, dict[str, str]]]:
    """(path, write parameters) of each AppRole secret the ETL's agent templates fetch; no parameters: a read."""
    annotations = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["metadata"]["annotations"]
    calls = []
    for key, template in annotations.items():
        if key.startswith("vault.hashicorp.com/agent-inject-template-"):
            for path, params in _SECRET.findall(template):
                if path.startswith("auth/approle/"):
                    calls.append((path, dict(p.split("=", 1) for p in re.findall(r'"([^"]+)"', params))))
    return calls


@pytest.fixture
def agent(stack_env: dict[str, str]) -> hvac.Client:
    """A client holding a token with the ETL agent's policy (and a PKI like production's to try it on)."""
    root = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    root.sys.create_or_update_policy("tokenvault-etl-agent", AGENT_POLICY.read_text())
    if "pki/" not in root.sys.list_mounted_secrets_engines()["data"]:
        root.sys.enable_secrets_engine("pki", path="pki")
        root.write_data("pki/root/generate/internal", data={"common_name": "test clients CA", "ttl": "24h"})
        root.write_data("pki/roles/tokenvault-clients", data={"allow_any_name": True, "max_ttl": "1h", "ttl": "1h"})
    token = root.auth.token.create(policies=["tokenvault-etl-agent"], ttl="10m")["auth"]["client_token"]
    return hvac.Client(url=stack_env["VAULT_ADDR"], token=token)


def test_the_agent_templates_give_the_etl_a_sealing_approle_that_works(
    stack_env: dict[str, str], agent: hvac.Client, tmp_path: Path
) -> None:
    calls = agent_calls()
    assert {path for path, _ in calls} == {
        "auth/approle/role/tokenvault-etl/role-id",
        "auth/approle/role/tokenvault-etl/secret-id",
    }
    rendered: dict[str, Any] = {}
    for path, params in calls:  # as the agent does: a read, or a write with the template's parameters
        rendered |= (agent.write_data(path, data=params) if params else agent.read(path))["data"]
    secret_id_file = tmp_path / "dlq-secret-id"
    secret_id_file.write_text(rendered["secret_id"])
    sealer = TransitSealer(stack_env["VAULT_ADDR"], rendered["role_id"], secret_id_file)
    sealer.check_access()
    (envelope,) = sealer.seal(['{"ip": "192.0.2.1"}'])
    sealed = read_dead_letter_body(envelope)
    assert sealed is not None and sealed["sealed_body"] and "192.0.2.1" not in envelope
    operator = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    opened = open_sealed(stack_env["VAULT_ADDR"], operator, "tokenvault-dead-letters", sealed["sealed_body"])
    assert opened == '{"ip": "192.0.2.1"}'


def test_the_agent_gets_a_certificate_for_the_etl_and_for_no_other_client(agent: hvac.Client) -> None:
    issued = agent.write_data("pki/issue/tokenvault-clients", data={"common_name": "etl-service"})
    assert "BEGIN CERTIFICATE" in issued["data"]["certificate"]
    for data in ({"common_name": "fraud-investigator"}, {"common_name": "etl-service", "alt_names": "analyst"}):
        with pytest.raises(hvac.exceptions.Forbidden):  # the ETL pod cannot become an analyst
            agent.write_data("pki/issue/tokenvault-clients", data=data)


@pytest.mark.parametrize(
    ("call", "path", "data"),
    [
        ("write", "transit/encrypt/tokenvault-dead-letters", {"plaintext": "eA=="}),  # only the AppRole seals
        ("write", "transit/rewrap/tokenvault-dead-letters", {"ciphertext": "vault:v1:eA=="}),  # and proves
        ("write", "transit/decrypt/tokenvault-dead-letters", {"ciphertext": "vault:v1:eA=="}),
        ("write", "transit/datakey/plaintext/tokenvault", {}),  # the vault service's KEK
        ("write", "auth/approle/role/tokenvault-etl/secret-id", {"ttl": "720h"}),  # only a day's secret id
        ("write", "auth/approle/role/tokenvault-etl/secret-id", {"metadata": '{"by": "agent"}'}),
        ("read", "auth/approle/role/tokenvault-service/role-id", {}),  # another role
        ("write", "auth/approle/role/tokenvault-service/secret-id", {}),
    ],
)
def test_the_agent_policy_refuses_everything_else(
    agent: hvac.Client, call: str, path: str, data: dict[str, str]
) -> None:
    with pytest.raises(hvac.exceptions.Forbidden):
        agent.write_data(path, data=data) if call == "write" else agent.read(path)


METRICS_SERVERS = "etl-service.tokenvault.svc,vault-service.tokenvault.svc,lock-watchdog.tokenvault.svc"
"""The metrics server role's allowed_domains (docs/production.md, Vault step 4)."""


def metrics_pki(stack_env: dict[str, str]) -> None:
    """The metrics PKI as docs/production.md sets it up, in the test stack's OpenBao (mounted once, roles written)."""
    root = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    if "pki-metrics/" not in root.sys.list_mounted_secrets_engines()["data"]:
        root.sys.enable_secrets_engine("pki", path="pki-metrics")
        root.write_data("pki-metrics/root/generate/internal", data={"common_name": "test metrics CA", "ttl": "24h"})
    server_role = {"allowed_domains": METRICS_SERVERS, "allow_bare_domains": True, "server_flag": True}
    root.write_data(
        "pki-metrics/roles/tokenvault-metrics-server", data={**server_role, "client_flag": False, "ttl": "1h"}
    )
    scraper = {"allowed_domains": "metrics-scraper", "allow_bare_domains": True, "server_flag": False}
    root.write_data("pki-metrics/roles/tokenvault-metrics-scraper", data={**scraper, "ttl": "1h"})


def test_the_agent_gets_the_etl_s_metrics_server_certificate_and_no_scraper_certificate(
    stack_env: dict[str, str], agent: hvac.Client
) -> None:
    """The metrics PKI as docs/production.md sets it up: the ETL's agent cannot mint the scraper's identity."""
    metrics_pki(stack_env)
    issued = agent.write_data(
        "pki-metrics/issue/tokenvault-metrics-server", data={"common_name": "etl-service.tokenvault.svc"}
    )
    certificate = x509.load_pem_x509_certificate(issued["data"]["certificate"].encode())
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH not in usages  # refused as a client by the metrics endpoints
    for path, data in (
        ("pki-metrics/issue/tokenvault-metrics-scraper", {"common_name": "metrics-scraper"}),
        ("pki-metrics/issue/tokenvault-metrics-server", {"common_name": "vault-service.tokenvault.svc"}),
    ):
        with pytest.raises(hvac.exceptions.Forbidden):
            agent.write_data(path, data=data)
