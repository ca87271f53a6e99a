"""The shipped deployments serve the vault's certificate-less health listener on a Unix socket, never a TCP port.

Attack 21, F4 / review 21, R21-3: on a TCP port (Kubernetes' 8086, compose's 50052) any network
neighbour - a process on the node, a container in the pod - reached the listener without a
certificate, and a rapid-reset flood from 4 processes failed half the probes; ~256 idle
connections still failed them. With no TCP health port in compose, the Kubernetes manifests or the
image, a flood has nothing to reach: probes run `python -m vault_service.entrypoints.health_probe`
in the container against a socket only the service's uid may reach. Run by `make deploy-check`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from tests.compose_model import resolved
from tests.k8s_manifests import by_kind
from vault_service.entrypoints.health_probe import dial_target
from vault_service.entrypoints.health_socket import address_problem, unix_socket_path
from vault_service.entrypoints.server import LIVENESS_SERVICE

REPO = Path(__file__).resolve().parents[2]
PROBE_MODULE = "vault_service.entrypoints.health_probe"


def _health_socket(environment: dict[str, str]) -> Path:
    """The Unix socket the environment's TOKENVAULT_HEALTH_ADDRESS names (it must name one)."""
    assert "TOKENVAULT_HEALTH_TCP" not in environment, "a TCP health port opted into"
    address = environment["TOKENVAULT_HEALTH_ADDRESS"]
    assert address_problem(address) is None, address
    path = unix_socket_path(address)
    assert path is not None, f"TOKENVAULT_HEALTH_ADDRESS={address} is a TCP address"
    assert dial_target(address) == address  # the probe dials the socket itself
    return path


def _vault_container() -> dict[str, Any]:
    (container,) = by_kind("Deployment")["vault-service"]["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_kubernetes_probes_exec_the_probe_module_on_the_socket_and_the_pod_opens_no_health_port() -> None:
    container = _vault_container()
    socket_path = _health_socket({e["name"]: e["value"] for e in container["env"]})
    assert {p["name"] for p in container["ports"]} == {"grpc", "metrics"}, container["ports"]
    services = []
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = container[kind]
        assert set(probe) & {"grpc", "tcpSocket", "httpGet"} == set(), f"{kind} dials a port"
        command = probe["exec"]["command"]
        assert command[:3] == ["python", "-m", PROBE_MODULE] and importlib.util.find_spec(PROBE_MODULE)
        services.append(command[command.index("--service") + 1] if "--service" in command else "")
    assert services == ["", LIVENESS_SERVICE, LIVENESS_SERVICE]  # readiness follows the database
    # The socket's directory is created by the service on a writable volume of its own container.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert container["securityContext"]["readOnlyRootFilesystem"]
    assert any(socket_path.parent.is_relative_to(path) and not m.get("readOnly") for path, m in mounts.items())


def test_no_kubernetes_manifest_mentions_the_old_tcp_health_port() -> None:
    for manifest in (REPO / "deploy" / "k8s" / "vault-service").glob("*.yaml"):
        assert "8086" not in manifest.read_text(), manifest


def test_compose_serves_the_vault_s_health_on_a_socket_its_health_check_dials(tmp_path: Path) -> None:
    vault = resolved(tmp_path)["services"]["vault-service"]
    socket_path = _health_socket(vault["environment"])
    container_tmp = "/tmp"  # noqa: S108  # the container's own tmpfs, not this machine's
    assert socket_path.parent.is_relative_to(container_tmp) and container_tmp in vault["tmpfs"]
    assert vault["read_only"]
    assert vault["healthcheck"]["test"][1:] == ["python", "-m", "devstack.healthcheck"]
    assert all(str(p.get("target")) != "50052" for p in vault.get("ports", []))


def test_the_image_s_health_check_uses_the_same_probe() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'CMD ["python", "-m", "devstack.healthcheck"]' in dockerfile.split("HEALTHCHECK", 1)[1].splitlines()[0]
    healthcheck = (REPO / "devstack" / "healthcheck.py").read_text()
    assert f"from {PROBE_MODULE} import serving" in healthcheck
