"""A client-CA rotation on OpenBao PKI: each issuer's list is rendered and enforced (review 19, R19-5).

OpenBao/Vault PKI keeps one CRL per issuer; pki/cert/crl is the default issuer's only. With a
CA bundle of the old and the new CA (the rotation of docs/production.md step 4) a vault given
the default issuer's list alone ran the other CA with no list: its revoked certificates worked.
Here the deployment's own agent templates (deploy/k8s/vault-service/deployment.yaml) are
rendered by a real agent (`bao agent`, the engine of Vault's agent injector) against a mount of
the test's own holding two issuers, as shipped (`default`) and as edited for the rotation (one
line per issuer, its name in place of `default`).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import hvac
import pytest
import yaml
from cryptography import x509
from prometheus_client import REGISTRY

from devstack import certs
from devstack.openbao import bao_binary
from tests.conftest import RunningVault, running_vault
from tokenvault_client import ClientIdentity, TokenType, Unauthenticated, VaultClient
from vault_service.adapters.client_crl_lists import InvalidRevocationList

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = REPO / "deploy" / "k8s" / "vault-service" / "deployment.yaml"
MOUNT = "pki-rotation-r19"
OLD, NEW = "clients-2026", "clients-2027"
AGENT_CONFIG = """vault {{
  address = "{address}"
}}
auto_auth {{
  method "token_file" {{
    config = {{ token_file_path = "{token_file}" }}
  }}
}}
exit_after_auth = true
"""
"""An agent that renders its templates once and exits (as the injector's init container, pre-populate)."""


@pytest.fixture
def pki(stack_env: dict[str, str]) -> Iterator[hvac.Client]:
    """A mount with the old client CA and the new one, the new one the default: mid-rotation."""
    root = hvac.Client(url=stack_env["VAULT_ADDR"], token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    root.sys.enable_secrets_engine("pki", path=MOUNT)
    try:
        for name in (OLD, NEW):
            root.write_data(
                f"{MOUNT}/root/generate/internal",
                data={"common_name": f"{name} CA", "issuer_name": name, "key_type": "ec", "ttl": "24h"},
            )
        root.write_data(f"{MOUNT}/config/issuers", data={"default": NEW})
        root.write_data(f"{MOUNT}/config/crl", data={"auto_rebuild": False, "enable_delta": False, "expiry": "72h"})
        root.write_data(
            f"{MOUNT}/roles/tokenvault-clients",
            data={"allow_any_name": True, "client_flag": True, "server_flag": False, "ttl": "1h"},
        )
        yield root
    finally:
        root.sys.disable_secrets_engine(MOUNT)


def _templates(issuers: tuple[str, ...]) -> dict[str, str]:
    """The deployment's ca.pem and client-crl.pem templates, on the test's mount, for `issuers` (() as shipped)."""
    annotations = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["metadata"]["annotations"]
    templates = {}
    for name in ("ca.pem", "client-crl.pem"):
        template = annotations[f"vault.hashicorp.com/agent-inject-template-{name}"].replace('"pki/', f'"{MOUNT}/')
        if issuers:  # the documented edit: the line repeated per issuer, its name in place of `default`
            (line,) = template.splitlines()
            template = "\n".join(line.replace("/issuer/default/", f"/issuer/{issuer}/") for issuer in issuers) + "\n"
        templates[name] = template
    return templates


def _render(stack_env: dict[str, str], directory: Path, issuers: tuple[str, ...] = ()) -> dict[str, Path]:
    """What the pod's agent writes from those templates, rendered once by `bao agent`."""
    directory.mkdir()
    rendered = {name: directory / name for name in ("ca.pem", "client-crl.pem")}
    for name, template in _templates(issuers).items():
        (directory / f"{name}.tmpl").write_text(template)
    config = directory / "agent.hcl"
    config.write_text(
        AGENT_CONFIG.format(address=stack_env["VAULT_ADDR"], token_file=stack_env["VAULT_ROOT_TOKEN_FILE"])
        + "".join(
            f'template {{\n  source = "{path}.tmpl"\n  destination = "{path}"\n}}\n' for path in rendered.values()
        )
    )
    subprocess.run([bao_binary(), "agent", f"-config={config}"], check=True, capture_output=True, timeout=30)
    return rendered


def _issue(pki: hvac.Client, issuer: str, server_ca: Path, directory: Path, name: str) -> tuple[ClientIdentity, str]:
    """A certificate for the stack's `analyst` from `issuer` (the mount's default or not), and its serial."""
    issued = pki.write_data(f"{MOUNT}/issuer/{issuer}/issue/tokenvault-clients", data={"common_name": "analyst"})
    (directory / f"{name}.pem").write_text(issued["data"]["certificate"])
    (directory / f"{name}-key.pem").write_text(issued["data"]["private_key"])
    identity = ClientIdentity(server_ca, directory / f"{name}.pem", directory / f"{name}-key.pem", "localhost")
    return identity, issued["data"]["serial_number"]


def _reveals(vault: RunningVault, identity: ClientIdentity, token: str) -> bool:
    try:
        with VaultClient.connect(vault.address, identity) as client:
            return bool(client.detokenize([token], "CASE-ROTATION"))
    except Unauthenticated:
        return False


def _crl_number(pki: hvac.Client, issuer: str) -> int:
    crl = x509.load_pem_x509_crl(pki.read(f"{MOUNT}/issuer/{issuer}/crl")["data"]["crl"].encode())
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _refused_ca_left_out() -> float:
    return REGISTRY.get_sample_value("tokenvault_client_crl_refused_total", {"reason": "ca_left_out"}) or 0.0


def test_each_issuers_list_is_enforced_during_a_ca_rotation_and_a_file_without_one_is_refused(
    stack_env: dict[str, str], pki: hvac.Client, tmp_path: Path, client_for: Callable[..., VaultClient]
) -> None:
    server_ca = certs.load_authority(Path(stack_env["STACK_DIR"]) / "certs").cert_path
    stolen, stolen_serial = _issue(pki, OLD, server_ca, tmp_path, "stolen")  # the non-default CA's
    kept, _ = _issue(pki, OLD, server_ca, tmp_path, "kept")
    current, _ = _issue(pki, NEW, server_ca, tmp_path, "current")
    pki.write_data(f"{MOUNT}/revoke", data={"serial_number": stolen_serial})
    numbers = {issuer: _crl_number(pki, issuer) for issuer in (OLD, NEW)}
    pki.read(f"{MOUNT}/crl/rotate")  # the CronJob crl-rotate's read rebuilds every issuer's list
    assert all(_crl_number(pki, issuer) > number for issuer, number in numbers.items())
    (token,) = client_for("etl-service").tokenize([(TokenType.IP, "198.51.100.80")])
    assert isinstance(token, str)

    rotation = _render(stack_env, tmp_path / "rotation", (OLD, NEW))
    assert [ca.subject.rfc4514_string() for ca in x509.load_pem_x509_certificates(rotation["ca.pem"].read_bytes())] == [
        f"CN={OLD} CA",
        f"CN={NEW} CA",
    ]
    assert rotation["client-crl.pem"].read_bytes().count(b"-----BEGIN X509 CRL-----") == 2
    with running_vault(
        stack_env,
        TOKENVAULT_TLS_CLIENT_CA=str(rotation["ca.pem"]),
        TOKENVAULT_TLS_CLIENT_CRL=str(rotation["client-crl.pem"]),
    ) as rotating:
        assert not _reveals(rotating, stolen, token), "a revoked certificate of the non-default CA worked"
        assert _reveals(rotating, kept, token) and _reveals(rotating, current, token)

        # The template as shipped renders the default issuer's list alone: a running vault refuses it.
        before = _refused_ca_left_out()
        shipped = _render(stack_env, tmp_path / "shipped")
        assert x509.load_pem_x509_crl(shipped["client-crl.pem"].read_bytes()).issuer.rfc4514_string() == f"CN={NEW} CA"
        shipped["client-crl.pem"].replace(rotation["client-crl.pem"])
        deadline = time.monotonic() + 10
        while _refused_ca_left_out() == before:
            assert time.monotonic() < deadline, "the file without the old CA's list was not refused"
            assert not _reveals(rotating, stolen, token)
            time.sleep(0.5)
        assert not _reveals(rotating, stolen, token)

    # A vault started on the two CAs with that file refuses to start, naming the CA left without a list.
    both_cas, default_list_only = str(rotation["ca.pem"]), str(rotation["client-crl.pem"])
    with (
        pytest.raises(InvalidRevocationList, match=f"no list of the client CA CN={OLD} CA"),
        running_vault(stack_env, TOKENVAULT_TLS_CLIENT_CA=both_cas, TOKENVAULT_TLS_CLIENT_CRL=default_list_only),
    ):
        pass
