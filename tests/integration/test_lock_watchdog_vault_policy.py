"""Kubernetes: the lock watchdog's Vault policy (config/vault/tokenvault-lock-watchdog.hcl) reads its own database
credentials and nothing else (review 34, R34-3: every other Kubernetes role had its policy file; this one was in
docs/production.md's words only).

Against the real OpenBao of the test stack: a token with only this policy may read exactly the path the pod's agent
template renders (deploy/k8s/lock-watchdog/deployment.yaml), and is denied the other roles' credentials, the PKI and
Transit.
"""

from __future__ import annotations

import re
from pathlib import Path

import hvac
import yaml

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "config" / "vault" / "tokenvault-lock-watchdog.hcl"
DEPLOYMENT = REPO / "deploy" / "k8s" / "lock-watchdog" / "deployment.yaml"


def _rendered_paths() -> set[str]:
    """Every Vault path the watchdog pod's agent reads (its inject annotations and templates)."""
    annotations = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["metadata"]["annotations"]
    paths = {v for k, v in annotations.items() if k.startswith("vault.hashicorp.com/agent-inject-secret-")}
    for key, template in annotations.items():
        if key.startswith("vault.hashicorp.com/agent-inject-template-"):
            paths |= set(re.findall(r'secret "([^"]+)"', template))
    return paths


def test_the_watchdogs_policy_reads_its_credentials_only(stack_env: dict[str, str]) -> None:
    root = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    root.sys.create_or_update_policy("tokenvault-lock-watchdog", POLICY.read_text())
    token = root.auth.token.create(policies=["tokenvault-lock-watchdog"], ttl="10m", no_default_policy=True)
    rendered = _rendered_paths()
    assert rendered == {"database/creds/tokenvault-watchdog"}
    others = [
        "database/creds/tokenvault-vault",
        "database/creds/tokenvault-etl",
        "database/roles/tokenvault-watchdog",
        "database/config/tokenvault",
        "pki/issue/tokenvault-clients",
        "pki-metrics/issue/tokenvault-metrics-server",
        "transit/decrypt/tokenvault",
        "transit/keys/tokenvault",
        "sys/policies/acl/tokenvault-lock-watchdog",
    ]
    paths = [*sorted(rendered), *others]
    answer = root.write_data("sys/capabilities", data={"token": token["auth"]["client_token"], "paths": paths})["data"]
    for path in rendered:
        assert answer[path] == ["read"], (path, answer[path])
    for path in others:
        assert answer[path] == ["deny"], (path, answer[path])
