"""The compose stack's services, bringing them up, and what the ETL has stored.

Shared by the compose steps (test_compose_stack.py, test_compose_vault_init_secret_ids.py,
test_compose_stack_isolation.py), which run in order on one stack.
"""

from __future__ import annotations

from tests.compose.conftest import Timer
from tests.compose.stack import Compose

LONG_RUNNING = ("postgres", "vault", "localstack", "vault-service", "lock-watchdog", "etl-service")
"""The services that run for good, each with a health check."""
ONE_SHOT = ("certs", "vault-init", "migrate", "sqs-init")
"""The services that run once at `up` and must exit 0."""


def up(compose: Compose) -> float:
    """`docker compose up --wait` (images already built); the seconds it took."""
    timer = Timer()
    compose.run("up", "--wait", "--no-build", timeout=300)
    return timer.seconds


def counts(compose: Compose) -> tuple[int, int]:
    """(rows in user_logins, rows in etl_quarantine)."""
    (rows,) = compose.sql("SELECT count(*) FROM user_logins")[0]
    (quarantined,) = compose.sql("SELECT count(*) FROM etl_quarantine")[0]
    return int(rows), int(quarantined)


def running_healthy(compose: Compose) -> bool:
    """Every long-running service runs healthy and no one-shot failed."""
    return set(LONG_RUNNING) <= compose.states().keys() and not compose.troubled()
