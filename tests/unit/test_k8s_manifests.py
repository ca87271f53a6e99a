"""deploy/k8s: what no general tool knows — references resolve, probes point at real ports, every
setting the services require is provided, nothing secret is written in a manifest.

Schema validity (kubernetes-validate against the official schemas) and security policy
(checkov) are checked by the field's tools in `make deploy-check`; these tests keep the
project-specific checks. The kustomization's resources are loaded as kustomize would.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from etl_service.config import EtlConfig
from tests.k8s_manifests import K8S, by_kind, kustomization
from tokenvault_common.database_dsn import read_dsn_file
from tokenvault_common.env import ConfigError
from vault_service.config import VaultServiceConfig
from vault_service.domain.policy import load_policy
from vault_service.entrypoints import admin_cli
from vault_service.entrypoints.lock_watchdog import WatchdogConfig
from vault_service.entrypoints.server import LIVENESS_SERVICE


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_each_service_runs_as_a_uid_of_its_own() -> None:
    users = [d["spec"]["template"]["spec"]["securityContext"]["runAsUser"] for d in by_kind("Deployment").values()]
    assert len(users) == len(set(users)) == 3 and 0 not in users


def test_the_configmap_generator_files_exist_and_the_policy_is_valid() -> None:
    (generator,) = kustomization()["configMapGenerator"]
    for name in generator["files"]:
        assert (K8S / name).is_file()
    policy = load_policy(K8S / "vault-policy.toml")
    etl = policy.permissions("etl-service")
    assert etl.tokenize and not etl.detokenize and not etl.erase  # the ETL may tokenize only


def test_selectors_of_services_budgets_and_policies_match_their_pods() -> None:
    deployments = by_kind("Deployment")
    labels = {name: pod_labels(d) for name, d in deployments.items()}
    labels |= {
        name: job["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        for name, job in by_kind("CronJob").items()
    }
    for service in by_kind("Service").values():
        target = labels[service["metadata"]["name"]]
        assert all(target.get(k) == v for k, v in service["spec"]["selector"].items())
        port_names = {p["name"] for p in container(deployments[service["metadata"]["name"]])["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    for budget in by_kind("PodDisruptionBudget").values():
        assert selects(budget["spec"]["selector"], labels[budget["metadata"]["name"]])
    for policy in by_kind("NetworkPolicy").values():
        assert selects(policy["spec"]["podSelector"], labels[policy["metadata"]["name"]])


def test_autoscalers_target_existing_deployments() -> None:
    deployments = by_kind("Deployment")
    (hpa,) = by_kind("HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "vault-service" in deployments
    (scaled,) = by_kind("ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] == "etl-service" in deployments
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    assert trigger["authenticationRef"]["name"] in by_kind("TriggerAuthentication")
    queue_env = {e["name"]: e.get("value") for e in container(deployments["etl-service"])["env"]}
    assert trigger["metadata"]["queueURL"] == queue_env["ETL_QUEUE_URL"]


def probes(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    spec = container(deployment)
    return [spec[k] for k in ("readinessProbe", "livenessProbe", "startupProbe") if k in spec]


@pytest.mark.parametrize("name", ["vault-service", "etl-service", "lock-watchdog"])
def test_probes_point_at_declared_ports_or_real_modules(name: str) -> None:
    deployment = by_kind("Deployment")[name]
    ports = {p["name"]: p["containerPort"] for p in container(deployment).get("ports", [])}
    assert probes(deployment), "no probe"
    for probe in probes(deployment):
        if "exec" in probe:
            command = probe["exec"]["command"]
            assert command[:2] == ["python", "-m"] and importlib.util.find_spec(command[2]) is not None
            continue
        action = probe.get("tcpSocket") or probe.get("httpGet") or probe.get("grpc")
        assert action is not None
        port = action["port"]
        assert port in ports or port in ports.values()
        if "grpc" in probe:  # the health-only listener, and a health entry the server sets
            env = {e["name"]: e["value"] for e in container(deployment)["env"]}
            assert env["TOKENVAULT_HEALTH_ADDRESS"].endswith(f":{port}")
            assert probe["grpc"].get("service", "") in ("", LIVENESS_SERVICE)


def test_the_service_ports_are_the_ones_the_processes_listen_on() -> None:
    vault = container(by_kind("Deployment")["vault-service"])
    env = {e["name"]: e["value"] for e in vault["env"]}
    ports = {p["name"]: p["containerPort"] for p in vault["ports"]}
    assert env["TOKENVAULT_GRPC_ADDRESS"].endswith(f":{ports['grpc']}")
    assert int(env["TOKENVAULT_METRICS_PORT"]) == ports["metrics"]
    etl = container(by_kind("Deployment")["etl-service"])
    etl_env = {e["name"]: e["value"] for e in etl["env"]}
    assert int(etl_env["ETL_METRICS_PORT"]) == {p["name"]: p["containerPort"] for p in etl["ports"]}["metrics"]
    assert etl_env["ETL_VAULT_ADDRESS"].endswith(":50051")


def pod_environment(deployment: dict[str, Any]) -> dict[str, str]:
    """The container's env plus what the Vault agent templates export at start."""
    spec = container(deployment)
    env = {e["name"]: e["value"] for e in spec["env"]}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    for key, template in annotations.items():
        if key.startswith("vault.hashicorp.com/agent-inject-template-"):
            env |= {m: "from-vault" for m in re.findall(r"export (\w+)=", template)}
            # a quoted value as the agent renders it, each {{ ... }} a value from Vault (the DSNs' checks see them)
            env |= {
                m: re.sub(r"\{\{[^}]*\}\}", "from-vault", v) for m, v in re.findall(r'export (\w+)="([^"]*)"', template)
            }
    env |= {m: "from-vault" for m in re.findall(r"export (\w+)=", " ".join(spec.get("args", [])))}
    return env


@pytest.mark.parametrize(
    ("name", "load"), [("vault-service", VaultServiceConfig.from_env), ("etl-service", EtlConfig.from_env)]
)
def test_every_setting_a_service_requires_is_provided(name: str, load: Any) -> None:
    env = pod_environment(by_kind("Deployment")[name])
    with pytest.raises(ConfigError) as error:  # the files exist only inside the pod
        load(env)
    problems = str(error.value).splitlines()[1:]
    mounted = ("/vault/secrets/", "/etc/tokenvault/")
    assert problems and all("which is not a file" in p and any(m in p for m in mounted) for p in problems), problems


def rendered(template: str) -> str:
    """A Vault agent template's file as the agent renders it, each value from Vault `from-vault`."""
    text = re.sub(r"\{\{-? *(with|end)\b[^}]*\}\}", "", template)
    return re.sub(r"\{\{[^}]*\}\}", "from-vault", text).strip()


def test_the_lock_watchdog_has_every_setting_and_its_probe_needs_no_port(tmp_path: Path) -> None:
    """Migration 0048's watchdog: its DSN from Vault (a login IN ROLE tokenvault_watchdog), metrics over TLS to
    Prometheus only, its probes on its health socket.

    Review 34, R34-12: the DSN is the agent's file, which it reads at every (re)connection - the agent renders it
    again with a new login as each lease ends - never a shell sourcing it once at the start. R34-3, R34-9: its metrics
    were on the pod's loopback, read by its probe alone (no scrape, no alert); they are TLS-only, admitted from the
    monitoring namespace alone, and the probes ask a Unix socket, as the vault's."""
    deployment = by_kind("Deployment")["lock-watchdog"]
    env = pod_environment(deployment)
    assert env["TOKENVAULT_WATCHDOG_DSN_FILE"] == "/vault/secrets/dsn" and "TOKENVAULT_WATCHDOG_DSN" not in env
    assert container(deployment)["command"] == ["python", "-m", "vault_service.entrypoints.lock_watchdog"]
    assert "args" not in container(deployment)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["vault.hashicorp.com/agent-inject-secret-dsn"] == "database/creds/tokenvault-watchdog"
    dsn_file = tmp_path / "dsn"  # the file the agent renders (checked as the watchdog checks it)
    dsn_file.write_text(rendered(annotations["vault.hashicorp.com/agent-inject-template-dsn"]))
    files = {name: tmp_path / Path(value).name for name, value in env.items() if "_METRICS_TLS_" in name}
    for file in files.values():
        file.touch()  # the agent's files exist only inside the pod
    config = WatchdogConfig.from_env(
        env | {"TOKENVAULT_WATCHDOG_DSN_FILE": str(dsn_file)} | {name: str(f) for name, f in files.items()}
    )
    assert config.dsn_file is not None and config.dsn_file.path == dsn_file and config.dsn == ""
    assert config.metrics_tls is not None and config.health_address.startswith("unix:/tmp/")
    assert container(deployment)["ports"] == [{"name": "metrics", "containerPort": config.metrics_port}]
    assert by_kind("NetworkPolicy")["lock-watchdog"]["spec"]["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"port": config.metrics_port, "protocol": "TCP"}],
        }
    ]
    assert {v["mountPath"] for v in container(deployment)["volumeMounts"]} == {"/tmp"}  # noqa: S108  # its emptyDir
    # Review 34, R34-4: a database outage fails its looks (not Ready) but never restarts it (liveness: its loop runs).
    spec = container(deployment)
    alive = ["python", "-m", "vault_service.entrypoints.lock_watchdog", "health", "--alive"]
    assert spec["livenessProbe"]["exec"]["command"] == alive and spec["startupProbe"]["exec"]["command"] == alive
    assert spec["readinessProbe"]["exec"]["command"] == alive[:-1]


@pytest.mark.parametrize(
    ("name", "variable", "creds"),
    [
        ("vault-service", "TOKENVAULT_DATABASE_DSN", "database/creds/tokenvault-vault"),
        ("etl-service", "ETL_DATABASE_DSN", "database/creds/tokenvault-etl"),
        ("vault-admin", "TOKENVAULT_DATABASE_DSN", "database/creds/tokenvault-vault"),
    ],
)
def test_each_service_reads_its_rotating_dsn_from_the_agent_s_file(
    name: str, variable: str, creds: str, tmp_path: Path
) -> None:
    """Review 34, R34-12: the vault's and the ETL's DSNs are the agent's file, read at every new connection (the
    agent renders it again with a new login as each lease ends), never exported into a file a shell sources once."""
    deployment = {"spec": _admin_job()["spec"]} if name == "vault-admin" else by_kind("Deployment")[name]
    env = pod_environment(deployment)
    assert env[f"{variable}_FILE"] == "/vault/secrets/dsn" and variable not in env
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["vault.hashicorp.com/agent-inject-secret-dsn"] == creds
    dsn_file = tmp_path / "dsn"  # the file the agent renders, checked as the service checks it at each connection
    dsn_file.write_text(rendered(annotations["vault.hashicorp.com/agent-inject-template-dsn"]))
    assert read_dsn_file(dsn_file, f"{variable}_FILE", {}).startswith("postgresql://from-vault:from-vault@")
    assert not any(creds in str(v) for k, v in annotations.items() if k.endswith("-env"))


def test_no_secret_value_is_written_in_a_manifest() -> None:
    assert not by_kind("Secret")
    for deployment in by_kind("Deployment").values():
        for variable in container(deployment)["env"]:
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|SECRET_ID)$", variable["name"]) or "valueFrom" in variable
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", str(variable.get("value", "")))
    text = "\n".join(p.read_text() for p in K8S.rglob("*.yaml"))
    assert "BEGIN" not in text and "aws_secret_access_key" not in text.lower()


def test_the_vault_is_reachable_only_from_the_etl_and_labelled_clients() -> None:
    policy = by_kind("NetworkPolicy")["vault-service"]
    (grpc_rule, _metrics_rule) = policy["spec"]["ingress"]
    sources = grpc_rule["from"]
    assert {"app.kubernetes.io/name": "etl-service"} in [s["podSelector"]["matchLabels"] for s in sources]
    assert all(s["podSelector"]["matchLabels"] for s in sources)  # nobody unlabelled
    assert grpc_rule["ports"] == [{"port": 50051, "protocol": "TCP"}]


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("vault-service", "TOKENVAULT_METRICS"),
        ("etl-service", "ETL_METRICS"),
        ("lock-watchdog", "TOKENVAULT_WATCHDOG_METRICS"),
    ],
)
def test_metrics_are_served_over_tls_to_the_metrics_pki_only_and_no_probe_needs_them(name: str, prefix: str) -> None:
    deployment = by_kind("Deployment")[name]
    env = {e["name"]: e["value"] for e in container(deployment)["env"]}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    template = "vault.hashicorp.com/agent-inject-template-"
    rendered_from = {
        value: annotations[f"{template}{Path(value).name}"]
        for setting, value in env.items()
        if setting.startswith(f"{prefix}_TLS_")
    }
    assert len(rendered_from) == 3, env  # certificate, key, client CA
    assert all('secret "pki-metrics/' in text for text in rendered_from.values())  # never the gRPC PKI
    assert annotations["prometheus.io/scheme"] == "https"
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    for probe in probes(deployment):  # the kubelet holds no scraper certificate
        action = probe.get("httpGet") or probe.get("grpc") or {}
        assert action.get("port") not in ("metrics", ports["metrics"]), probe


def test_the_prometheus_example_scrapes_both_services_and_the_watchdog_with_the_scraper_certificate() -> None:
    config = yaml.safe_load((K8S.parent / "prometheus" / "scrape-config.yaml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for service in ("vault-service", "etl-service", "lock-watchdog"):
        job = jobs[f"tokenvault-{service}"]
        assert job["scheme"] == "https" and job["tls_config"]["server_name"] == f"{service}.tokenvault.svc"
        assert {"ca_file", "cert_file", "key_file"} <= job["tls_config"].keys()


def test_the_vault_sets_each_client_s_share_of_calls_against_its_workers_and_the_etl_s() -> None:
    """docs/production.md, Scaling: the ETL's pods share one client identity, so one share per replica.

    Set, not left to a default that moves with another setting: at most half the workers (an
    analyst always finds one), and at least one ETL pod's calls at once (ETL_WORKERS: a single pod
    is never refused on its own; more pods than a replica's share are, and back off).
    """
    vault_env = {e["name"]: e.get("value") for e in container(by_kind("Deployment")["vault-service"])["env"]}
    etl_env = {e["name"]: e.get("value") for e in container(by_kind("Deployment")["etl-service"])["env"]}
    assert {"TOKENVAULT_WORKERS", "TOKENVAULT_MAX_CALLS_PER_CLIENT"} <= vault_env.keys(), vault_env
    workers, share = int(vault_env["TOKENVAULT_WORKERS"]), int(vault_env["TOKENVAULT_MAX_CALLS_PER_CLIENT"])
    assert int(etl_env["ETL_WORKERS"]) <= share <= workers // 2


POSTGRES_HOST = "postgres.tokenvault-data.svc:5432"


@pytest.mark.parametrize("name", ["vault-service", "etl-service", "lock-watchdog"])
def test_the_services_reach_postgres_only_in_its_namespace_and_with_verify_full(name: str) -> None:
    """docs/threat-model.md row 14: what deploy/k8s itself sets for the path to Postgres.

    Only the services' side is shipped (egress and DSN); who else reaches Postgres is the
    platform's, and that libpq enforces verify-full is libpq's (no TLS connection is made here).
    """
    annotations = by_kind("Deployment")[name]["spec"]["template"]["metadata"]["annotations"]
    template = "vault.hashicorp.com/agent-inject-template-"
    files = "\n".join(rendered(str(v)) for k, v in annotations.items() if k.startswith(template))
    dsns = re.findall(r'postgresql://[^"\s]+', files)  # exported, or a file of its own (the watchdog's)
    assert dsns and all(POSTGRES_HOST in dsn and dsn.endswith("?sslmode=verify-full") for dsn in dsns), dsns
    egress = by_kind("NetworkPolicy")[name]["spec"]["egress"]
    to_postgres = [rule for rule in egress if {"port": 5432, "protocol": "TCP"} in rule.get("ports", [])]
    assert to_postgres == [
        {
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tokenvault-data"}}}],
            "ports": [{"port": 5432, "protocol": "TCP"}],
        }
    ]
    anywhere = [rule for rule in egress if not rule.get("to")]  # SQS over HTTPS only
    assert anywhere == [{"ports": [{"port": 443, "protocol": "TCP"}]}] if name == "etl-service" else not anywhere


def test_the_etl_s_tokenize_quotas_are_the_ones_the_threat_model_quotes() -> None:
    """docs/threat-model.md row 5 and the README: only the production policy paces a sweep.

    Production's new-token burst is below a /16 and its rate below what one vault process mints
    (~47 000/s, docs/performance.md); the development policy's are above it (it paces nothing).
    Change the docs with the numbers.
    """
    production = load_policy(K8S / "vault-policy.toml").permissions("etl-service").limits
    development = load_policy(K8S.parents[1] / "config" / "vault-policy.toml").permissions("etl-service").limits
    assert (production.new_tokens.per_second, production.new_tokens.burst) == (20_000, 20_000)
    assert production.new_tokens.burst < 65_536 and production.new_tokens.per_second < 47_000
    assert (development.tokenize.per_second, development.tokenize.burst) == (200_000, 1_000_000)
    assert (development.new_tokens.per_second, development.new_tokens.burst) == (100_000, 500_000)
    assert development.new_tokens.per_second > 47_000


def test_the_vault_renders_each_client_cas_full_crl_and_re_reads_it_within_a_minute() -> None:
    # Attack 18, finding 2: the agent re-reads a static secret every 5 minutes by default, and a
    # delta CRL (crl/delta) is refused by the vault, which would then keep a stale list. Review 19,
    # R19-5: OpenBao/Vault PKI keeps one list per issuer, and the vault refuses a file without the
    # list of a CA of its bundle - the two templates name the same issuers, each CA with its list.
    annotations = by_kind("Deployment")["vault-service"]["spec"]["template"]["metadata"]["annotations"]
    cas = re.findall(r'secret "([^"]+)"', annotations["vault.hashicorp.com/agent-inject-template-ca.pem"])
    lists = re.findall(r'secret "([^"]+)"', annotations["vault.hashicorp.com/agent-inject-template-client-crl.pem"])
    issuers = [re.fullmatch(r"pki/issuer/([\w-]+)/json", path).group(1) for path in cas]  # type: ignore[union-attr]
    assert issuers and lists == [f"pki/issuer/{issuer}/crl" for issuer in issuers]
    assert annotations["vault.hashicorp.com/agent-inject-secret-client-crl.pem"] == lists[0]
    interval = annotations["vault.hashicorp.com/template-static-secret-render-interval"]
    amount, unit = re.fullmatch(r"(\d+)([sm])", interval).groups()  # type: ignore[union-attr]
    assert int(amount) * {"s": 1, "m": 60}[unit] <= 60


def test_production_guide_has_the_pki_rebuild_its_crl_daily_and_on_each_revocation() -> None:
    # Vault/OpenBao PKI's CRL expires 72 h after it was built and is rebuilt only on a revocation:
    # after three quiet days every vault pod that starts exits 2. auto_rebuild=true would stop the
    # rebuild on revocation (tests/integration/test_certificate_revocation_openbao.py).
    guide = (Path(__file__).parents[2] / "docs" / "production.md").read_text()
    (command,) = re.findall(r"vault write pki/config/crl [^\n]*", guide)
    assert "auto_rebuild=false" in command and "enable_delta=false" in command
    assert re.search(r"vault read pki/crl/rotate +# daily", guide)


def _admin_job() -> dict[str, Any]:
    """The admin command's Job template (the suspended CronJob vault-admin's jobTemplate)."""
    cron = by_kind("CronJob")["vault-admin"]
    assert cron["spec"]["suspend"] is True  # `kubectl apply -k` never runs it: each run is a Job made from it
    job: dict[str, Any] = cron["spec"]["jobTemplate"]
    return job


def test_the_admin_job_runs_once_non_root_read_only_and_goes_away() -> None:
    job = _admin_job()["spec"]
    assert job["backoffLimit"] == 0 and 0 < job["ttlSecondsAfterFinished"] <= 7 * 86400
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    (only,) = pod["containers"]
    context = only["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    annotations = job["template"]["metadata"]["annotations"]
    assert annotations["vault.hashicorp.com/agent-pre-populate-only"] == "true"  # no sidecar: the Job completes


def test_the_admin_job_has_the_vault_s_identity_secrets_and_settings() -> None:
    vault = by_kind("Deployment")["vault-service"]["spec"]["template"]
    admin = _admin_job()["spec"]["template"]
    assert admin["spec"]["serviceAccountName"] == vault["spec"]["serviceAccountName"]
    admin_context = {k: v for k, v in admin["spec"]["securityContext"].items() if k != "fsGroup"}  # its token file's
    assert admin_context == vault["spec"]["securityContext"]
    # What a process that serves nothing needs not: metrics, renewals, and the server's certificate (review 32, F6).
    served_only = ("metrics", "template-static-secret-render-interval", "tls.pem", "tls-key.pem")
    wanted = {k: v for k, v in vault["metadata"]["annotations"].items() if k.startswith("vault.hashicorp.com/")}
    wanted = {k: v for k, v in wanted.items() if not any(s in k for s in served_only)}
    assert {k: admin["metadata"]["annotations"].get(k) for k in wanted} == wanted
    issued = [k for k, v in admin["metadata"]["annotations"].items() if "pki/issue/" in v]
    assert issued == [], issued  # no certificate is issued to a pod that serves nothing
    vault_env = {e["name"]: e["value"] for e in container({"spec": {"template": vault}})["env"]}
    admin_container = container({"spec": {"template": admin}})
    admin_env = {e["name"]: e["value"] for e in admin_container["env"]}
    shared = admin_env.keys() & vault_env.keys()
    assert {k: admin_env[k] for k in shared} == {k: vault_env[k] for k in shared}  # the same settings, same values
    mounts = {m["mountPath"]: m["name"] for m in container({"spec": {"template": vault}})["volumeMounts"]}
    admin_mounts = {m["mountPath"]: m["name"] for m in admin_container["volumeMounts"]}
    assert mounts.items() <= admin_mounts.items()
    volumes = {v["name"]: v for v in vault["spec"]["volumes"]}
    assert all(v == volumes[v["name"]] for v in admin["spec"]["volumes"] if v["name"] in volumes)
    token = next(v for v in admin["spec"]["volumes"] if v["name"] == "operator-token")
    assert token["secret"]["optional"] is True  # audit-verify and who-saw run without an operator token
    assert admin_env["VAULT_SECURITY_TOKEN_FILE"].startswith(
        next(m["mountPath"] for m in admin_container["volumeMounts"] if m["name"] == "operator-token")
    )


def test_the_admin_job_runs_an_admin_command_with_every_setting_it_requires() -> None:
    template = _admin_job()["spec"]["template"]
    (script,) = container({"spec": {"template": template}})["args"]
    command = re.search(r"exec python -m vault_service\.admin (.+)$", script)
    assert command, script
    admin_cli._parser().parse_args(command.group(1).split())  # a command the admin CLI takes
    env = pod_environment({"spec": {"template": template}})
    with pytest.raises(ConfigError) as error:  # the files exist only inside the pod
        VaultServiceConfig.from_env(env, serving=False)  # as the admin command reads it: no server certificate
    problems = str(error.value).splitlines()[1:]
    mounted = ("/vault/secrets/", "/etc/tokenvault/")
    assert problems and all("which is not a file" in p and any(m in p for m in mounted) for p in problems), problems


def _image_user() -> tuple[int, int]:
    """The uid and gid the image runs as (the Dockerfile's `USER uid:gid`), when the pod does not say."""
    users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", (K8S.parents[1] / "Dockerfile").read_text(), re.MULTILINE)
    assert users, "the Dockerfile's USER is not uid:gid"
    uid, gid = users[-1]
    return int(uid), int(gid)


def _secret_file_readable(pod: dict[str, Any], container: dict[str, Any], volume: dict[str, Any], key: str) -> bool:
    """Whether `container` can read `key` of the Secret `volume`, as the kubelet writes it.

    The kubelet writes a Secret's files owned by root, with the item's `mode` or the volume's
    `defaultMode` (0644 when neither); with the pod's fsGroup the files' group is fsGroup and group read is
    added (kubernetes/kubernetes#57923), else the group is root. The container's uid is its runAsUser (the
    pod's, else the image's), its groups its runAsGroup (else the image's gid), fsGroup and supplementalGroups.
    """
    pod_context, own_context = pod.get("securityContext", {}), container.get("securityContext", {})
    image_uid, image_gid = _image_user()
    uid = own_context.get("runAsUser", pod_context.get("runAsUser", image_uid))
    gid = own_context.get("runAsGroup", pod_context.get("runAsGroup", image_gid))
    groups = {gid, *pod_context.get("supplementalGroups", [])}
    secret = volume["secret"]
    mode = next((i["mode"] for i in secret.get("items", []) if i["key"] == key and "mode" in i), None)
    mode = mode if mode is not None else secret.get("defaultMode", 0o644)
    owner, group = 0, 0
    if "fsGroup" in pod_context:
        group = pod_context["fsGroup"]
        groups.add(group)
        mode |= 0o040
    return bool((uid == owner and mode & 0o400) or (group in groups and mode & 0o040) or mode & 0o004)


def test_the_admin_job_s_uid_can_read_the_operator_token_and_other_uids_cannot() -> None:
    """Review 32, F5: mode 0400 with no fsGroup gave a root:root file that uid 10001 could not read."""
    pod = _admin_job()["spec"]["template"]["spec"]
    (admin,) = pod["containers"]
    token = next(v for v in pod["volumes"] if v["name"] == "operator-token")
    file = next(e["value"] for e in admin["env"] if e["name"] == "VAULT_SECURITY_TOKEN_FILE")
    mount = next(m["mountPath"] for m in admin["volumeMounts"] if m["name"] == "operator-token")
    assert file == f"{mount}/token"  # the Secret's key `token` (docs/production.md creates it so)
    assert _secret_file_readable(pod, admin, token, "token")
    assert not token["secret"].get("defaultMode", 0o644) & 0o007  # not readable by any other uid


def test_the_secret_file_rule_refuses_a_root_only_file_for_a_non_root_uid() -> None:
    """The rule above on the manifest as it was (0400, no fsGroup): unreadable; and with fsGroup: readable."""
    pod: dict[str, Any] = {"securityContext": {"runAsUser": 10001}}
    volume = {"secret": {"secretName": "s", "defaultMode": 0o400}}
    assert not _secret_file_readable(pod, {}, volume, "token")
    assert _secret_file_readable({"securityContext": {"runAsUser": 10001, "fsGroup": 10001}}, {}, volume, "token")


def _policy_paths(name: str) -> list[str]:
    return re.findall(r'^path "([^"]+)"', (K8S.parents[1] / "config" / "vault" / f"{name}.hcl").read_text(), re.M)


@pytest.mark.parametrize("which", ["deployment", "admin-job"])
def test_no_container_of_the_vaults_pods_holds_a_token_that_may_mint_its_database_logins(which: str) -> None:
    """Attack 32, F7: the service's Vault token (agent-inject-token) could read database/creds/tokenvault-vault, and
    each read made a login of tokenvault_vault with its own CONNECTION LIMIT: 7 took every slot of the server. The
    agent keeps its token, the pod mounts the service account token for the agent alone, and the service logs in
    with AppRole tokenvault-service (Transit only) from ids the agent renders."""
    template = by_kind("Deployment")["vault-service"]["spec"]["template"] if which == "deployment" else None
    template = template or _admin_job()["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    spec = template["spec"]
    assert annotations.get("vault.hashicorp.com/agent-inject-token", "false") == "false"
    assert spec["automountServiceAccountToken"] is False
    account = by_kind("ServiceAccount")[spec["serviceAccountName"]]
    assert account["automountServiceAccountToken"] is False
    volume_name = annotations["vault.hashicorp.com/agent-service-account-token-volume-name"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == volume_name]
    assert [s["serviceAccountToken"]["path"] for s in volume["projected"]["sources"]] == ["token"]
    for each in spec["containers"] + spec.get("initContainers", []):  # the injector mounts it in its agent's only
        assert volume_name not in {m["name"] for m in each.get("volumeMounts", [])}
    (script,) = container({"spec": {"template": template}})["args"]
    assert "/vault/secrets/token" not in script and script.startswith(". /vault/secrets/env &&")
    env = pod_environment({"spec": {"template": template}})
    assert "TOKENVAULT_VAULT_TOKEN" not in env and env["TOKENVAULT_VAULT_ROLE_ID"] == "from-vault"
    secret_id = env["TOKENVAULT_VAULT_SECRET_ID_FILE"]
    assert secret_id.startswith("/vault/secrets/")
    name = secret_id.removeprefix("/vault/secrets/")
    assert (
        "auth/approle/role/tokenvault-service/secret-id"
        in annotations[f"vault.hashicorp.com/agent-inject-template-{name}"]
    )
    agent, service = _policy_paths("tokenvault-vault-agent"), _policy_paths("tokenvault-service")
    assert "database/creds/tokenvault-vault" in agent and not any(p.startswith("transit/") for p in agent)
    assert [p for p in agent if p.startswith("auth/")] == [
        "auth/approle/role/tokenvault-service/role-id",
        "auth/approle/role/tokenvault-service/secret-id",
    ]
    assert service and all(p.startswith("transit/") for p in service)  # the service's own token: Transit only


@pytest.mark.parametrize(
    ("deployment", "agent_policy", "mints"),
    [
        ("etl-service", "tokenvault-etl-agent", ["pki/issue/tokenvault-clients", "database/creds/tokenvault-etl"]),
        ("lock-watchdog", "tokenvault-lock-watchdog", ["database/creds/tokenvault-watchdog"]),
    ],
)
def test_no_container_of_the_etls_or_the_watchdogs_pod_holds_the_token_their_agent_logs_in_with(
    deployment: str, agent_policy: str, mints: list[str]
) -> None:
    """Attack 40, A40-1: the ETL's pod mounted its service account token (Kubernetes' default), which logs in to role
    tokenvault-etl-service: the ETL process could issue itself `etl-service` certificates at will (each a fresh burst
    of audited refusals) and mint logins of tokenvault_etl; the lock watchdog's likewise logins IN ROLE
    tokenvault_watchdog, each with a CONNECTION LIMIT of its own. As the vault's pods (attack 32, F7): the token is
    projected for the Vault agent alone, and nothing the agent renders is a Vault token."""
    template = by_kind("Deployment")[deployment]["spec"]["template"]
    annotations, spec = template["metadata"]["annotations"], template["spec"]
    assert set(mints) <= set(_policy_paths(agent_policy))  # why the token matters: what its login may mint
    assert annotations.get("vault.hashicorp.com/agent-inject-token", "false") == "false"
    assert spec["automountServiceAccountToken"] is False
    assert by_kind("ServiceAccount")[spec["serviceAccountName"]]["automountServiceAccountToken"] is False
    volume_name = annotations["vault.hashicorp.com/agent-service-account-token-volume-name"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == volume_name]
    assert [s["serviceAccountToken"]["path"] for s in volume["projected"]["sources"]] == ["token"]
    for each in spec["containers"] + spec.get("initContainers", []):  # the injector mounts it in its agent's only
        assert volume_name not in {m["name"] for m in each.get("volumeMounts", [])}
        assert "serviceaccount" not in repr(each)  # nor is another path to it named
    templates = [value for key, value in annotations.items() if key.startswith("vault.hashicorp.com/agent-inject-")]
    assert not any("auth/token/create" in text or ".Auth.ClientToken" in text for text in templates)
