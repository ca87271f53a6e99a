"""Kubernetes: the daily CRL rebuild's agent rebuilds the client CA's CRL and can do nothing else (attack 18, f. 2).

Against the real OpenBao of the test stack: a token with the CronJob's policy
(config/vault/tokenvault-crl-rotate.hcl) performs the read of the CronJob's one agent template
(deploy/k8s/crl-rotate/cronjob.yaml); the CA's list is rebuilt (a higher CRL number, a later next
update) and the answer is what the container checks. The token cannot revoke, issue or change
the CRL configuration.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
import yaml
from cryptography import x509

REPO = Path(__file__).resolve().parents[2]
CRONJOB = REPO / "deploy" / "k8s" / "crl-rotate" / "cronjob.yaml"
POLICY = REPO / "config" / "vault" / "tokenvault-crl-rotate.hcl"


def _template() -> tuple[str, str]:
    """(path, field) the CronJob's agent template reads."""
    pod = yaml.safe_load(CRONJOB.read_text())["spec"]["jobTemplate"]["spec"]["template"]
    template = pod["metadata"]["annotations"]["vault.hashicorp.com/agent-inject-template-crl-rotated"]
    (path, field) = re.findall(r'with secret "([^"]+)" -\}\}\{\{ \.Data\.(\w+) \}\}', template)[0]
    return path, field


def _crl(client: hvac.Client) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(client.read("pki/cert/crl")["data"]["certificate"].encode())


def _number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


@pytest.fixture
def rotator(stack_env: dict[str, str]) -> hvac.Client:
    """A client holding a token with the CronJob's policy, on a PKI like production's."""
    root = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    if "pki/" not in root.sys.list_mounted_secrets_engines()["data"]:
        root.sys.enable_secrets_engine("pki", path="pki")
        root.write_data("pki/root/generate/internal", data={"common_name": "test clients CA", "ttl": "24h"})
        root.write_data("pki/roles/tokenvault-clients", data={"allow_any_name": True, "max_ttl": "1h", "ttl": "1h"})
    root.sys.create_or_update_policy("tokenvault-crl-rotate", POLICY.read_text())
    token = root.auth.token.create(policies=["tokenvault-crl-rotate"], ttl="10m", no_default_policy=True)
    return hvac.Client(url=stack_env["VAULT_ADDR"], token=token["auth"]["client_token"])


def test_the_cronjobs_template_rebuilds_the_crl_and_the_container_sees_success(
    stack_env: dict[str, str], rotator: hvac.Client
) -> None:
    root = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    before = _crl(root)
    time.sleep(1.1)  # the rebuilt list's thisUpdate moves on
    path, field = _template()
    answer = rotator.read(path)["data"][field]
    assert str(answer).lower() == "true"  # what the agent renders, and the container checks
    after = _crl(root)
    assert _number(after) > _number(before)
    assert after.next_update_utc is not None and before.next_update_utc is not None
    assert after.next_update_utc > before.next_update_utc


@pytest.mark.parametrize(
    ("method", "path", "data"),
    [
        ("write", "pki/revoke", {"serial_number": "01"}),
        ("write", "pki/issue/tokenvault-clients", {"common_name": "analyst"}),
        ("write", "pki/config/crl", {"expiry": "8760h"}),
        ("read", "pki/crl/rotate-delta", None),
        ("write", "pki/tidy", {"tidy_revoked_certs": True}),
    ],
)
def test_the_cronjobs_token_can_do_nothing_else(rotator: hvac.Client, method: str, path: str, data: object) -> None:
    with pytest.raises(hvac.exceptions.Forbidden):
        rotator.write_data(path, data=data) if method == "write" else rotator.read(path)
