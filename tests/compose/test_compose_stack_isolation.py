"""From every container of the compose stack, an insider reaches its own secrets and no one else's.

The compose counterpart of the embedded stack's walk (tests/e2e/test_embedded_stack.py): each
running service (`exec`, as the user the container runs commands as) and each one-shot job and
tool (`run`, with the same mounts, environment and user) runs tests/compose/insider_walk.py,
which tries to read every secret of the stack - TLS private keys and the CAs' keys, AppRole
secret ids (the vault service's and the ETL's, which seals the DLQ), Vault's root token and
unseal key, the database passwords and role ids - by file name anywhere in the container and
by value in every process environment, command line, mounted file and file the container
wrote, plus Postgres' and Vault's data, the audit trail, Unix sockets, the other services'
loopback ports, the volumes mounted (read-only unless it writes them) and the process, IPC and
network namespaces (no two containers share one: no container sees another's processes, hence
their /proc/PID/environ), and the act NET_RAW would allow: a raw packet socket (ARP spoofing of the
bridge that carries OpenBao's plain HTTP) and a raw ICMP socket are denied in every container,
whose bounding set holds no CAP_NET_RAW either (cap_drop applies whatever the image: this holds
for the official images too, though their other capabilities were tried with the stand-ins only).
Over the network, each container tries every port of the other services, by name and by address,
and connects to exactly those tests/compose/network_reach.py gives it: the SQS emulator only
from the ETL, the producer of sample events and sqs-init (each with a key of its own; the
emulator's root key is its own and sqs-init's), OpenBao and Postgres only from the containers
that use them.
Each container must reach exactly what the tables below give it: another
service's secret is not even there (not mounted, not in its environment), and the control -
its own secrets read - shows the walk can read.

Runs on the session's stack after test_compose_stack.py (name order); run alone, it starts the
stack first. Secret values go to the walk on stdin and are compared inside it, never printed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypedDict

import pytest

from tests.compose.conftest import Timer, figure
from tests.compose.network_reach import addresses, endpoints, wrong_reach
from tests.compose.services import LONG_RUNNING, ONE_SHOT, running_healthy, up
from tests.compose.stack import Compose

pytestmark = pytest.mark.compose

WALK = (Path(__file__).resolve().parent / "insider_walk.py").read_text()
TOOLS = (
    "load-sample",
    "analyst",
    "privacy-officer",
    "security",
    "metrics",
)  # `docker compose run --rm` containers (profile tools)

CA_KEYS = "the CAs' private keys"
# Each secret (or service's data) -> the containers that may hold it. Everything else is refused.
HOLDERS: dict[str, frozenset[str]] = {
    "postgres admin password": frozenset({"postgres", "migrate"}),
    "vault service's DB password": frozenset({"vault-service", "migrate"}),
    "ETL's DB password": frozenset({"etl-service", "migrate"}),
    "lock watchdog's DB password": frozenset({"lock-watchdog", "migrate"}),
    "privacy officer's DB password": frozenset({"privacy-officer", "migrate"}),
    "security team's DB password": frozenset({"security", "migrate"}),
    "vault service's role id": frozenset({"vault-service", "vault-init"}),
    "ETL's role id": frozenset({"etl-service", "vault-init"}),
    "vault service's secret id": frozenset({"vault-service", "vault-init"}),
    "ETL's secret id (seals the DLQ)": frozenset({"etl-service", "vault-init"}),
    "Vault root token": frozenset({"vault-init"}),
    "SQS emulator's root key": frozenset({"localstack", "sqs-init"}),
    "ETL's SQS key": frozenset({"etl-service", "sqs-init"}),
    "producer's SQS key": frozenset({"load-sample", "sqs-init"}),
    "Vault unseal key": frozenset({"vault-init"}),
    CA_KEYS: frozenset({"certs"}),
    "vault service's TLS keys": frozenset({"vault-service", "certs"}),
    "ETL's TLS keys": frozenset({"etl-service", "certs"}),
    "analyst's TLS key": frozenset({"analyst", "certs"}),
    "security team's TLS key": frozenset({"security", "certs"}),
    "privacy officer's TLS key": frozenset({"privacy-officer", "certs"}),
    "metrics scraper's TLS key": frozenset({"metrics", "certs"}),
    "lock watchdog's TLS key": frozenset({"lock-watchdog", "certs"}),
    "Postgres data and socket": frozenset({"postgres"}),
    "Vault storage": frozenset({"vault"}),
    "OpenBao's audit trail": frozenset({"vault"}),  # walk49, W49-7: its own volume, vault-audit
    "audit checkpoints": frozenset({"vault-service"}),
    "vault's health socket": frozenset({"vault-service"}),  # no certificate: its own uid alone connects
    "lock watchdog's health socket": frozenset({"lock-watchdog"}),  # the same
}
DATA_LABELS = {
    "Postgres data and socket",
    "Vault storage",
    "OpenBao's audit trail",
    "audit checkpoints",
    "vault's health socket",
    "lock watchdog's health socket",
}  # found by name only
# What each file the walk finds by name is. A name not here (another key, a .env, an engine's
# socket, any other socket) is held by no one.
FILE_LABELS = {
    "ca-key.pem": CA_KEYS,
    "tokenvault-vault-key.pem": "vault service's TLS keys",
    "vault-metrics-key.pem": "vault service's TLS keys",
    "etl-service-key.pem": "ETL's TLS keys",
    "etl-metrics-key.pem": "ETL's TLS keys",
    "analyst-key.pem": "analyst's TLS key",
    "security-team-key.pem": "security team's TLS key",
    "privacy-officer-key.pem": "privacy officer's TLS key",
    "metrics-scraper-key.pem": "metrics scraper's TLS key",
    "watchdog-metrics-key.pem": "lock watchdog's TLS key",
    "secret-id": "vault service's secret id",
    "etl-secret-id": "ETL's secret id (seals the DLQ)",
    "etl-sqs-credentials": "ETL's SQS key",
    "producer-sqs-credentials": "producer's SQS key",
    "root-token": "Vault root token",
    "unseal-key": "Vault unseal key",
    "PG_VERSION": "Postgres data and socket",
    ".s.PGSQL.5432": "Postgres data and socket",
    "vault.db": "Vault storage",
    "raft.db": "Vault storage",
    "audit.log": "OpenBao's audit trail",
    "checkpoints.jsonl": "audit checkpoints",
    "health.sock": "vault's health socket",
    "watchdog-health.sock": "lock watchdog's health socket",
}
# Variables of the compose .env -> the secret they hold.
ENV_LABELS = {
    "PG_ADMIN_PASSWORD": "postgres admin password",
    "PG_VAULT_PASSWORD": "vault service's DB password",
    "PG_ETL_PASSWORD": "ETL's DB password",
    "PG_WATCHDOG_PASSWORD": "lock watchdog's DB password",
    "PG_PRIVACY_OFFICER_PASSWORD": "privacy officer's DB password",
    "PG_SECURITY_TEAM_PASSWORD": "security team's DB password",
    "VAULT_SERVICE_ROLE_ID": "vault service's role id",
    "VAULT_ETL_ROLE_ID": "ETL's role id",
    "SQS_ROOT_SECRET_ACCESS_KEY": "SQS emulator's root key",
}
# Held, but the holder's own uid cannot read it: the certs job (root without DAC_OVERRIDE)
# hands each key to its service's uid, 0400, and cannot read it back; in `vault` the walk runs
# as exec's default user, root, without DAC_OVERRIDE (docker-compose.yml keeps only SETUID and
# SETGID there), and Vault's files belong to user vault.
HELD_UNREADABLE = {
    "certs": {label for label, holders in HOLDERS.items() if "certs" in holders} - {CA_KEYS},
    "vault": {"Vault storage", "OpenBao's audit trail"},
    "sqs-init": {"ETL's SQS key", "producer's SQS key"},  # root without DAC_OVERRIDE, as certs
}
# Each volume -> the one container that writes it, and the others that may mount it (read-only).
VOLUMES = {
    "pgdata": ("postgres", ()),
    "vault-data": ("vault", ()),
    "vault-audit": ("vault", ()),  # OpenBao's audit trail: no other container reads or rewrites it (W49-7)
    "vault-unseal": ("vault-init", ()),
    "vault-creds-vault-service": ("vault-init", ("vault-service",)),
    "vault-creds-etl-service": ("vault-init", ("etl-service",)),
    "sqs-creds-etl-service": ("sqs-init", ("etl-service",)),
    "sqs-creds-load-sample": ("sqs-init", ("load-sample",)),
    "ca": ("certs", ()),
    "certs-vault-service": ("certs", ("vault-service",)),
    "certs-etl-service": ("certs", ("etl-service",)),
    "certs-analyst": ("certs", ("analyst",)),
    "certs-security-team": ("certs", ("security",)),
    "certs-privacy-officer": ("certs", ("privacy-officer",)),
    "certs-metrics-scraper": ("certs", ("metrics",)),
    "certs-lock-watchdog": ("certs", ("lock-watchdog",)),
    "audit-checkpoints": ("vault-service", ()),
    "login-row-keys": (
        "vault-init",
        ("privacy-officer", "security"),
    ),  # the ETL's row-signing public keys (A41-1): no secret
}
LOOPBACK_PORTS = {
    "postgres": [5432],
    "vault": [8200, 8201],
    "localstack": [4566],
    "vault-service": [50051, 9100],
    "etl-service": [9101, 9102],
    "lock-watchdog": [9103],  # its metrics (TLS, the scraper's CA)
}
RETIRED_HEALTH_PORT = 50052
"""The vault's plaintext health port until attack 21, F4: probed too, so a container listening on it is a finding
(the listener is on a Unix socket in the vault's own /tmp now)."""
# Reads every file named like a secret in the volumes mounted under /volumes: the test's own view,
# as the operator (root on the engine's host) has it.
COLLECT = (
    "import json, os\n"
    "found = {}\n"
    "for top, _, files in os.walk('/volumes'):\n"
    "    for name in files:\n"
    "        if name.endswith(('-key.pem', 'secret-id', 'root-token', 'unseal-key', '-sqs-credentials')):\n"
    "            found[os.path.join(top, name)] = open(os.path.join(top, name)).read()\n"
    "print(json.dumps(found))\n"
)


class Report(TypedDict):
    """What insider_walk.py prints (see its docstring)."""

    uid: int
    namespaces: dict[str, str]  # pid, ipc, net -> the namespace's id
    volumes: dict[str, list[str]]  # mount point -> [engine's volume name, "ro" or "rw"]
    files: dict[str, str]  # path -> "read" or "denied"
    values: dict[str, list[str]]  # label -> where its value was found
    ports: list[int]  # loopback ports that accepted a connection
    raw_sockets: dict[str, str]  # packet, icmp -> "allowed", "denied" or an errno's name
    net_raw: dict[str, bool]  # CapEff, CapBnd -> whether CAP_NET_RAW is in that set
    reached: dict[str, list[str]]  # "service:port" -> the names/addresses it accepted a connection on


def volume_names(compose: Compose) -> dict[str, str]:
    """The engine's name of each volume of the stack -> its name in docker-compose.yml."""
    model = json.loads(compose.run("config", "--format", "json").stdout)
    return {volume["name"]: name for name, volume in model["volumes"].items()}


def secret_values(compose: Compose) -> dict[str, list[str]]:
    """label -> the strings that give the secret away: every value the stack holds, looked up."""
    env = dict(line.split("=", 1) for line in compose.env_file.read_text().splitlines() if "=" in line)
    values = {label: [env[variable].strip()] for variable, label in ENV_LABELS.items()}
    mounts = [arg for name in volume_names(compose) for arg in ("-v", f"{name}:/volumes/{name}:ro")]
    collector = ("run", "--rm", "--network=none", "--user=0", *mounts, "--entrypoint=python3", "tokenvault:local")
    files = json.loads(compose.engine.docker(*collector, "-c", COLLECT).stdout)
    for path, content in files.items():
        label = FILE_LABELS[Path(path).name]
        if content.startswith("-----BEGIN"):  # a key: each full base64 line of its body
            values.setdefault(label, []).extend(line for line in content.splitlines() if len(line) == 64)
        elif content.startswith("[default]"):  # an SQS key (shared credentials file): its secret
            secret = [line.split("=", 1)[1].strip() for line in content.splitlines() if "secret_access_key" in line]
            values.setdefault(label, []).extend(secret)
        else:
            values.setdefault(label, []).append(content.strip())
    assert set(values) == set(HOLDERS) - DATA_LABELS, "a secret of the table was not found where it is kept"
    return values


def walk(compose: Compose, service: str, request: dict[str, object], container: str | None) -> Report:
    """The insider walk's report from `service`'s container (exec into `container`, or run a new one)."""
    request = dict(request)
    if container:
        changed = compose.engine.docker("diff", container).stdout.splitlines()  # its writable layer
        request["scan"] = [line[2:] for line in changed if line[:1] in ("A", "C")]
        command = ["exec", "-T", service, "python3", "-c", WALK]
    else:
        command = ["run", "--rm", "--no-deps", "-T", "--entrypoint", "python3", service, "-c", WALK]
    report: Report = json.loads(compose.run(*command, stdin=json.dumps(request)).stdout)
    return report


def reached_and_refused(service: str, report: Report, names: dict[str, str]) -> tuple[set[str], list[str]]:
    """What the container read (labels), and what it should not even see (findings, no values)."""
    reached, wrong = set(), []
    for point, (volume, mode) in report["volumes"].items():
        writer, readers = VOLUMES.get(names.get(volume, ""), ("", ()))
        if service != writer and (service not in readers or mode != "ro"):
            wrong.append(f"volume {names.get(volume, volume)} mounted at {point} ({mode})")
    for path, outcome in report["files"].items():
        label = FILE_LABELS.get(Path(path).name, f"unexpected file {Path(path).name}")
        if service not in HOLDERS.get(label, ()):
            wrong.append(f"{path} ({label}): {outcome}")
        if outcome == "read":
            reached.add(label)
    for label, paths in report["values"].items():
        if service not in HOLDERS[label]:
            wrong.append(f"{label} found in {', '.join(paths)}")
        reached.add(label)
    own_ports = LOOPBACK_PORTS.get(service, [])
    wrong += [f"port 127.0.0.1:{port} of another service" for port in report["ports"] if port not in own_ports]
    return reached, wrong


def shared_namespaces(service: str, report: Report, seen: dict[str, str]) -> list[str]:
    """The container's process, IPC and network namespaces that another one (`seen`) is in too."""
    mine = report["namespaces"].values()
    shared = [f"{namespace} shared with {seen[namespace]}" for namespace in mine if namespace in seen]
    if service in LONG_RUNNING:  # not a `run` container: once removed, its namespaces' numbers may be given again
        seen.update(dict.fromkeys(mine, service))
    return shared


def raw_network_access(report: Report) -> list[str]:
    """Each raw socket not denied, and CAP_NET_RAW in any capability set: none may be (cap_drop ALL)."""
    sockets = report["raw_sockets"].items()
    wrong = [f"a raw {kind} socket: {outcome}" for kind, outcome in sockets if outcome != "denied"]
    wrong += [f"CAP_NET_RAW in {mask}" for mask, present in report["net_raw"].items() if present]
    return wrong


def raw_sockets_with_net_raw(compose: Compose) -> dict[str, str]:
    """The control: the walk's raw sockets in a container of the stack given NET_RAW back (as root)."""
    command = ("run", "--rm", "--no-deps", "-T", "--user=0", "--cap-add=NET_RAW", "--entrypoint", "python3")
    report: Report = json.loads(compose.run(*command, "migrate", "-c", WALK, stdin="{}").stdout)
    return report["raw_sockets"]


def test_every_container_reaches_its_own_secrets_and_no_other_service_s(compose: Compose) -> None:
    timer = Timer()
    with compose.step():  # the findings say what is wrong; the logs of troubled services, if any
        if not running_healthy(compose):  # as the steps before left it; run alone, a first `up`
            up(compose)
        values, names = secret_values(compose), volume_names(compose)
        every_port = sorted({port for ports in LOOPBACK_PORTS.values() for port in ports} | {RETIRED_HEALTH_PORT})
        request: dict[str, object] = {"values": values, "ports": every_port}
        request["endpoints"] = endpoints(addresses(compose))
        findings, uids = [], {}
        mounted: dict[str, list[str]] = {}  # volume -> "service mount-point ro/rw" of each container mounting it
        seen = {os.readlink(f"/proc/self/ns/{kind}"): "the host" for kind in ("pid", "ipc", "net")}
        running = {name: str(row["ID"]) for name, row in compose.states().items() if name in LONG_RUNNING}
        for service in (*LONG_RUNNING, *ONE_SHOT, *TOOLS):
            report = walk(compose, service, request, running.get(service))
            uids[service] = report["uid"]
            for point, (volume, mode) in report["volumes"].items():
                mounted.setdefault(names.get(volume, volume), []).append(f"{service} {point} {mode}")
            reached, wrong = reached_and_refused(service, report, names)
            wrong += wrong_reach(service, report["reached"])
            wrong += shared_namespaces(service, report, seen)
            wrong += raw_network_access(report)
            findings += [f"{service} (uid {report['uid']}): {finding}" for finding in wrong]
            # The control: the walk does read what is the container's own, so a refusal above means something.
            own = {label for label, holders in HOLDERS.items() if service in holders}
            expected = own - HELD_UNREADABLE.get(service, set())
            assert reached >= expected, f"{service}: the walk could not read its own {sorted(expected - reached)}"
            assert set(report["ports"]) >= set(LOOPBACK_PORTS.get(service, [])), (service, report["ports"])
        assert not findings, "containers reach what is not theirs:\n" + "\n".join(findings)
        # Walk 49, W49-7: OpenBao's audit trail is in a volume of its own, kept across `down`/`up`, and OpenBao's
        # container is the only one to mount it (the security team's record of who used the keys).
        assert mounted.get("vault-audit") == ["vault /vault/logs rw"], mounted.get("vault-audit")
        # The control of "denied": with NET_RAW, the same probe opens both sockets on this engine.
        assert raw_sockets_with_net_raw(compose) == {"packet": "allowed", "icmp": "allowed"}
        ours = [uids[name] for name in ("vault-service", "etl-service", "migrate", *TOOLS)]
        assert len(set(ours)) == len(ours) and 0 not in ours, uids  # the certs job alone is root (CHOWN only)
    figure("insider walk in every container (5 exec, 9 run)", f"{timer.seconds:.0f} s")
