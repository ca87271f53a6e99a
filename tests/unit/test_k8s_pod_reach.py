"""deploy/k8s, attack 55: what a pod of the namespace holds and which peers its NetworkPolicies name.

Every pod template of the kustomization (Deployments and CronJobs alike) gets its service account token in its
Vault agent's projected volume only, and no NetworkPolicy peer matches a namespace by an empty selector: a
label on a pod is chosen by whoever creates the pod, in any namespace of the cluster.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.k8s_manifests import K8S, by_kind, manifests

AGENT_TOKEN_VOLUME = "vault.hashicorp.com/agent-service-account-token-volume-name"


def pod_templates() -> dict[str, dict[str, Any]]:
    """Each workload's pod template, by workload name."""
    found: dict[str, dict[str, Any]] = {}
    for each in manifests():
        if each["kind"] == "CronJob":
            found[each["metadata"]["name"]] = each["spec"]["jobTemplate"]["spec"]["template"]
        elif each["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            found[each["metadata"]["name"]] = each["spec"]["template"]
    return found


def network_peers() -> list[tuple[str, dict[str, Any]]]:
    """Every `from` and `to` peer of every NetworkPolicy, with the policy's name."""
    peers: list[tuple[str, dict[str, Any]]] = []
    for name, policy in by_kind("NetworkPolicy").items():
        rules = policy["spec"].get("ingress", []) + policy["spec"].get("egress", [])
        peers += [(name, peer) for rule in rules for peer in rule.get("from", []) + rule.get("to", [])]
    return peers


def test_every_workload_of_the_kustomization_is_looked_at() -> None:
    assert {"vault-service", "etl-service", "lock-watchdog", "vault-admin", "crl-rotate"} <= set(pod_templates())


@pytest.mark.parametrize("name", sorted(pod_templates()))
def test_no_container_holds_the_service_account_token_its_vault_agent_logs_in_with(name: str) -> None:
    """A55-1: crl-rotate's pod mounted its service account token in its container (Kubernetes' default, and its
    account said automount true), unlike every other pod (attacks 32 and 40): its process could log in to Vault as
    role tokenvault-crl-rotate. The token is projected for the agent alone."""
    template = pod_templates()[name]
    annotations, spec = template["metadata"].get("annotations", {}), template["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert by_kind("ServiceAccount")[spec["serviceAccountName"]]["automountServiceAccountToken"] is False
    if annotations.get("vault.hashicorp.com/agent-inject") != "true":
        return
    volume_name = annotations[AGENT_TOKEN_VOLUME]
    (volume,) = [v for v in spec["volumes"] if v["name"] == volume_name]
    assert [s["serviceAccountToken"]["path"] for s in volume["projected"]["sources"]] == ["token"]
    for each in spec["containers"] + spec.get("initContainers", []):
        assert volume_name not in {m["name"] for m in each.get("volumeMounts", [])}
        assert "serviceaccount" not in repr(each)


def test_no_network_policy_peer_selects_every_namespace() -> None:
    """A55-2, A55-3: `namespaceSelector: {}` matches every namespace, so the peer was any pod of the cluster carrying
    the pod label: a pod labelled k8s-app=kube-dns anywhere was a way out of every tokenvault pod on port 53, and a
    pod labelled tokenvault.io/vault-client anywhere reached the vault's gRPC port."""
    for name, peer in network_peers():
        if "namespaceSelector" in peer:
            selector = peer["namespaceSelector"]
            assert selector.get("matchLabels") or selector.get("matchExpressions"), (name, peer)


def test_dns_is_reached_in_kube_system_only() -> None:
    kube_dns = {"k8s-app": "kube-dns"}
    dns = [(name, peer) for name, peer in network_peers() if peer.get("podSelector", {}).get("matchLabels") == kube_dns]
    assert {name for name, _ in dns} == set(by_kind("NetworkPolicy"))  # every pod resolves names
    for _name, peer in dns:
        assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}


def test_labelled_clients_reach_the_vault_only_from_namespaces_labelled_to_hold_them() -> None:
    (grpc_rule, _metrics) = by_kind("NetworkPolicy")["vault-service"]["spec"]["ingress"]
    labelled = [p for p in grpc_rule["from"] if "tokenvault.io/vault-client" in p["podSelector"]["matchLabels"]]
    assert labelled == [
        {
            "namespaceSelector": {"matchLabels": {"tokenvault.io/vault-clients": "true"}},
            "podSelector": {"matchLabels": {"tokenvault.io/vault-client": "true"}},
        }
    ]


def _break_glass_section() -> str:
    text = (K8S.parents[1] / "docs" / "production.md").read_text()
    start = text.index("### The admin command as a Job (break-glass)")
    return text[start : text.index("\n## ", start)]


def test_the_guide_s_break_glass_section_says_what_the_admin_job_mounts() -> None:
    """A55-4: the guide said the admin Job's service account token was mounted (checkov's skip saying why); the
    manifest projects it for the Vault agent alone and skips no such check."""
    job = by_kind("CronJob")["vault-admin"]
    assert job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert "CKV_K8S_38" not in str(job["metadata"].get("annotations", {}))
    section = _break_glass_section()
    assert "automountServiceAccountToken: false" in section and "token is mounted" not in section


def test_the_guide_names_every_right_that_runs_code_as_the_vault_s_account() -> None:
    """A55-5: the guide kept only `create` on Jobs to the pipeline; a Pod, any workload kind, a token request for the
    account or an exec into a vault pod gives the same Transit decrypt and database login."""
    section = " ".join(_break_glass_section().split())
    for right in ("Pods", "Deployments", "serviceaccounts/token", "pods/exec", "pods/ephemeralcontainers"):
        assert right in section, right


def test_keda_reads_the_queue_depth_with_a_role_of_its_own_not_the_etl_s() -> None:
    """A55-6: `identityOwner: workload` had KEDA's operator assume the ETL's IAM role (receive, delete and send login
    events, raw ips and device ids); it assumes tokenvault-etl-scaler (deploy/aws/tokenvault-etl-scaler-sqs-policy.json:
    GetQueueAttributes on the source queue only, tests/unit/test_sqs_iam_policies.py)."""
    (auth,) = by_kind("TriggerAuthentication").values()
    identity = auth["spec"]["podIdentity"]
    etl_role = by_kind("ServiceAccount")["etl-service"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert "identityOwner" not in identity and identity["provider"] == "aws"
    assert identity["roleArn"].endswith(":role/tokenvault-etl-scaler") and identity["roleArn"] != etl_role
    assert (K8S.parents[1] / "deploy" / "aws" / "tokenvault-etl-scaler-sqs-policy.json").is_file()
