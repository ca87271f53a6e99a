"""Which container of the compose stack may open a TCP connection to which service's port.

Part of the insider walk (test_compose_stack_isolation.py): each container tries every network
port of the stack's long-running services, by the service's name and by each of its addresses
(so a name the stack's DNS does not give out still counts if the address is routed), and must
connect to exactly the ports the table gives it. The SQS emulator, OpenBao and Postgres ask for
credentials the table's other holders do not have (the emulator had none once: a connection
read and deleted raw events, attack 19 finding 3); each is on a network of its own, shared
only with the containers that use it (docker-compose.yml's `networks:`).
"""

from __future__ import annotations

import json

from tests.compose.stack import Compose

NETWORK_PORTS = {
    "postgres": [5432],
    "vault": [8200, 8201],  # OpenBao's API and its cluster port
    "localstack": [4566],
    "vault-service": [50051, 9100],  # gRPC (mTLS), metrics (the scraper's CA)
    "etl-service": [9101],  # metrics (the scraper's CA)
    "lock-watchdog": [9103],  # metrics (the scraper's CA)
}
# The TLS ports of the two services: a network is shared both ways, so whoever shares one with a
# service (the servers it uses among them) reaches its listeners, which ask for a certificate of
# their CA (test_compose_stack.py tries the ETL's keys on the metrics and is refused).
VAULT_SERVICE_PEERS = frozenset(
    {"etl-service", "analyst", "privacy-officer", "security", "metrics", "postgres", "migrate", "vault", "vault-init"}
)
ETL_PEERS = frozenset(
    {"vault-service", "metrics", "postgres", "migrate", "vault", "vault-init", "localstack", "load-sample", "sqs-init"}
)
# "service:port" -> the other containers that may connect to it. The rest must fail.
REACHED_BY: dict[str, frozenset[str]] = {
    # The privacy officer's erase counts in user_logins who else holds a token (its read-only login; attack 35, N5);
    # the security team's `audit login-rows` verifies its rows (its own read-only login; walk 47, W47-11).
    "postgres:5432": frozenset(
        {"migrate", "vault-service", "etl-service", "lock-watchdog", "privacy-officer", "security"}
    ),
    "vault:8200": frozenset({"vault-init", "vault-service", "etl-service"}),
    "vault:8201": frozenset({"vault-init", "vault-service", "etl-service"}),
    "localstack:4566": frozenset({"etl-service", "load-sample", "sqs-init"}),  # consumer, producer, set-up
    "vault-service:50051": VAULT_SERVICE_PEERS,
    "vault-service:9100": VAULT_SERVICE_PEERS,
    "etl-service:9101": ETL_PEERS,
    # The scraper, and the server it uses (a network is shared both ways), which holds no metrics certificate.
    "lock-watchdog:9103": frozenset({"metrics", "postgres"}),
}


def addresses(compose: Compose) -> dict[str, list[str]]:
    """Each long-running service's addresses on every network it is on (docker inspect)."""
    ids = {str(row["ID"]): name for name, row in compose.states().items() if name in NETWORK_PORTS}
    inspected = json.loads(compose.engine.docker("inspect", *ids).stdout)
    found: dict[str, list[str]] = {}
    for container in inspected:
        name = ids[next(key for key in ids if container["Id"].startswith(key))]
        networks = container["NetworkSettings"]["Networks"].values()
        found[name] = sorted(network["IPAddress"] for network in networks if network["IPAddress"])
    return found


def endpoints(addresses_of: dict[str, list[str]]) -> list[tuple[str, str, int]]:
    """(label "service:port", host to connect to, port): by name and by each address."""
    return [
        (f"{service}:{port}", host, port)
        for service, ports in NETWORK_PORTS.items()
        for port in ports
        for host in (service, *addresses_of.get(service, []))
    ]


def wrong_reach(service: str, reached: dict[str, list[str]]) -> list[str]:
    """What `service`'s container connected to that is not its to reach, and what it should but could not."""
    wrong = []
    for label, holders in REACHED_BY.items():
        if label.split(":")[0] == service:
            continue  # its own port, on its own addresses
        if label in reached and service not in holders:
            wrong.append(f"connects to {label} (as {', '.join(reached[label])})")
        elif label not in reached and service in holders:
            wrong.append(f"cannot connect to {label}, which it uses")  # the control: the walk does connect
    return wrong
