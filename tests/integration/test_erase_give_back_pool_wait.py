"""An erasure that failed with its database gone answers without waiting the pool out twice (review 51, R51-4).

The vault gives the budget of an erasure that erased nothing back (chaos 50, V50-4): one more statement, after the
erasure failed, on a pooled connection. With the database gone that give-back waited the pool's 10 s for a
connection, on top of the erasure's own failure, before the officer heard anything; it is best effort (R51-2) and
waits 2 s now. Real OpenBao and PostgreSQL; the vault reaches its database through a TCP proxy the test takes down
while the erasure waits on a token row held FOR UPDATE (as a key job's batch holds the rows it re-seals).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tests.conftest import RunningVault, running_vault, stack_identity
from tests.integration.erase_calls import erasing_in_background
from tests.integration.fresh_values import fresh_value
from tests.integration.own_database import database_of_its_own
from tests.integration.tcp_outage import TcpOutage
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import NO_RETRY, TokenType, VaultClient, VaultClientError

OFFICER = "privacy-officer"


def _through(proxy: TcpOutage, dsn: str) -> str:
    """`dsn` (its user and password kept) pointed at the proxy."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0] + f":{proxy.port}"))


@pytest.fixture
def behind_a_proxy(
    stack_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[dict[str, str], RunningVault, TcpOutage]]:
    """A vault of a database of its own, reached through a proxy the test can take down."""
    with database_of_its_own(stack_env, "givebackpool", migrated=True, checkpoint_file=tmp_path / "cp.jsonl") as env:
        proxy = TcpOutage(int(urlsplit(env["PG_VAULT_DSN"]).port or 5432))
        try:
            with running_vault(
                env,
                TOKENVAULT_DATABASE_DSN=_through(proxy, env["PG_VAULT_DSN"]),
                TOKENVAULT_AUDIT_CHECKPOINT_FILE=str(tmp_path / "cp.jsonl"),
            ) as vault:
                try:
                    yield env, vault, proxy
                finally:
                    proxy.up()  # the vault stops with its database back
        finally:
            proxy.close()


def test_an_erasure_failed_by_its_database_going_away_answers_within_seconds(
    behind_a_proxy: tuple[dict[str, str], RunningVault, TcpOutage],
) -> None:
    env, vault, proxy = behind_a_proxy
    with VaultClient.connect(vault.address, stack_identity(env, "etl-service")) as etl:
        tokens = [
            str(t) for t in etl.tokenize([(TokenType.IP, fresh_value(vault_pb2.TOKEN_TYPE_IP)) for _ in range(10)])
        ]
    with (
        VaultClient.connect(vault.address, stack_identity(env, OFFICER), retry=NO_RETRY) as officer,
        psycopg.connect(env["PG_ADMIN_DSN"]) as holder,
    ):
        holder.execute("SELECT 1 FROM vault.tokens WHERE token = %s FOR UPDATE", (tokens[5],))
        erasing, ended = erasing_in_background(officer, tokens, "GDPR-2026-5007", env)  # waits on the held row
        time.sleep(0.3)
        proxy.down()  # the database gone: the erasure's connection ended, new ones refused
        gone = time.monotonic()
        erasing.join(timeout=30)
        took = time.monotonic() - gone
    assert not erasing.is_alive()
    (error,) = ended
    assert isinstance(error, VaultClientError) and error.code.name == "UNAVAILABLE", error
    assert "the vault database" in str(error), error  # the erasure's own failure is what the officer is told
    # The give-back's 2 s for a connection (before the fix: the pool's 10 s).
    assert took < 6, f"the erasure's answer came {took:.1f} s after its database went away"
