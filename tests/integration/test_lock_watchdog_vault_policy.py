"""Kubernetes: the lock watchdog's Vault policy (config/vault/tokenvault-lock-watchdog.hcl) reads its own database
credentials and its metrics endpoint's certificate, and nothing else (review 34, R34-3: every other Kubernetes role had
its policy file; this one was in docs/production.md's words only; its metrics are served over TLS since).

Against the real OpenBao of the test stack: a token with only this policy may use exactly the paths the pod's agent
templates render (deploy/k8s/lock-watchdog/deployment.yaml), a metrics server certificate for its own name only, and
is denied the other roles' credentials, the gRPC PKI, the scraper's certificate and Transit.
"""

from __future__ import annotations

import re
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.integration.test_etl_k8s_sealing import metrics_pki

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "config" / "vault" / "tokenvault-lock-watchdog.hcl"
DEPLOYMENT = REPO / "deploy" / "k8s" / "lock-watchdog" / "deployment.yaml"
ISSUE = "pki-metrics/issue/tokenvault-metrics-server"
METRICS = {ISSUE: ["update"], "pki-metrics/cert/ca": ["read"]}
"""Its metrics endpoint's certificate and the metrics CA (the scraper's), as the vault's and the ETL's agents render."""


def _rendered_paths() -> set[str]:
    """Every Vault path the watchdog pod's agent reads (its inject annotations and templates)."""
    annotations = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["metadata"]["annotations"]
    paths = {v for k, v in annotations.items() if k.startswith("vault.hashicorp.com/agent-inject-secret-")}
    for key, template in annotations.items():
        if key.startswith("vault.hashicorp.com/agent-inject-template-"):
            paths |= set(re.findall(r'secret "([^"]+)"', template))
    return paths


def test_the_watchdogs_policy_reads_its_credentials_and_metrics_certificate_only(stack_env: dict[str, str]) -> None:
    root = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    root.sys.create_or_update_policy("tokenvault-lock-watchdog", POLICY.read_text())
    token = root.auth.token.create(policies=["tokenvault-lock-watchdog"], ttl="10m", no_default_policy=True)
    rendered = _rendered_paths()
    assert rendered == {"database/creds/tokenvault-watchdog", *METRICS}
    others = [
        "database/creds/tokenvault-vault",
        "database/creds/tokenvault-etl",
        "database/roles/tokenvault-watchdog",
        "database/config/tokenvault",
        "pki/issue/tokenvault-clients",
        "pki-metrics/issue/tokenvault-metrics-scraper",
        "transit/decrypt/tokenvault",
        "transit/keys/tokenvault",
        "sys/policies/acl/tokenvault-lock-watchdog",
    ]
    paths = [*sorted(rendered), *others]
    answer = root.write_data("sys/capabilities", data={"token": token["auth"]["client_token"], "paths": paths})["data"]
    for path in rendered:
        assert answer[path] == METRICS.get(path, ["read"]), (path, answer[path])
    for path in others:
        assert answer[path] == ["deny"], (path, answer[path])
    metrics_pki(stack_env)
    agent = hvac.Client(url=stack_env["VAULT_ADDR"], token=token["auth"]["client_token"])
    issued = agent.write_data(ISSUE, data={"common_name": "lock-watchdog.tokenvault.svc"})
    certificate = x509.load_pem_x509_certificate(issued["data"]["certificate"].encode())
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH not in usages  # refused as a client by every metrics endpoint
    for name in ("vault-service.tokenvault.svc", "etl-service.tokenvault.svc", "metrics-scraper"):
        with pytest.raises(hvac.exceptions.Forbidden):  # another endpoint's name, or the scraper's
            agent.write_data(ISSUE, data={"common_name": name})
