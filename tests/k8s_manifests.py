"""deploy/k8s's manifests as kustomize loads them: the kustomization's resources, by kind.

Shared by the manifests' own unit tests and by the integration tests that start a service with
the settings a manifest gives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"


def kustomization() -> dict[str, Any]:
    """deploy/k8s/kustomization.yaml."""
    document: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return document


def manifests() -> list[dict[str, Any]]:
    """Every document of the kustomization's resources, in order."""
    found: list[dict[str, Any]] = []
    for resource in kustomization()["resources"]:
        found += [d for d in yaml.safe_load_all((K8S / resource).read_text()) if d]
    return found


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    """The manifests of one kind (Deployment, Service, ...) by name."""
    return {m["metadata"]["name"]: m for m in manifests() if m["kind"] == kind}
