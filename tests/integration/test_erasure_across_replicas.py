"""An erasure on one vault replica reaches the token caches of the others.

Each replica caches value -> token; an erasure clears the cache of the replica that served it,
and every other replica clears its own when its key maintainer sees the erasure mark change
(README: "caches of other replicas drop within" the check interval). Until then it would hand
out the erased token again for the same value, and the person's new events would be linked to
the old ones (threat model #13: the value later gets a new, unlinkable token). The mark was
the newest erasure time, `max(erased_at)`, which an erasure committing after a later-started
one never moves; since migration 0014 it is a count the erasing transaction increments. Two
real replicas on one database; the erasures are the privacy officer's.
"""

from __future__ import annotations

import threading
import time
import uuid

import psycopg

from tests.conftest import client_channel, running_vault
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

CHECK_SECONDS = 1


def _tokenize(env: dict[str, str], address: str, value: str) -> str:
    channel = client_channel(env, address, "etl-service")
    try:
        request = vault_pb2.TokenizeRequest(items=[vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=value)])
        return str(vault_pb2_grpc.TokenVaultStub(channel).Tokenize(request, timeout=30).results[0].token)
    finally:
        channel.close()


def _erase(env: dict[str, str], address: str, token: str, outcome: list[bool]) -> None:
    channel = client_channel(env, address, "privacy-officer")
    try:
        request = vault_pb2.EraseRequest(tokens=[token], purpose="GDPR-REQ-17")
        outcome.append(vault_pb2_grpc.TokenVaultStub(channel).Erase(request, timeout=60).results[0].erased)
    finally:
        channel.close()


def _wait_until_blocked(env: dict[str, str]) -> None:
    deadline = time.monotonic() + 10
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as conn:
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'tokenvault_vault' AND wait_event_type = 'Lock'"
            " AND query LIKE '%erase_tokens%'"
        )
        while conn.execute(waiting).fetchone() != (1,):
            assert time.monotonic() < deadline, "the erasure of A never reached the row lock"
            time.sleep(0.05)


def test_an_erasure_that_commits_after_a_later_one_still_clears_the_other_replicas_caches(
    stack_env: dict[str, str],
) -> None:
    ip_a = f"198.18.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
    ip_b = f"198.19.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
    with (
        running_vault(stack_env, TOKENVAULT_KEY_CHECK_SECONDS=str(CHECK_SECONDS)) as serving,
        running_vault(stack_env, TOKENVAULT_KEY_CHECK_SECONDS=str(CHECK_SECONDS)) as erasing,
    ):
        token_a, token_b = _tokenize(stack_env, serving.address, ip_a), _tokenize(stack_env, serving.address, ip_b)
        # The erasure of A is slowed by a row lock (as a key job's re-seal of the same row
        # holds one): its erased_at is its start time, earlier than B's, which commits first.
        with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as locker:
            locker.execute("SELECT 1 FROM vault.tokens WHERE token = %s FOR UPDATE", (token_a,))
            erased_a: list[bool] = []
            slow = threading.Thread(target=_erase, args=(stack_env, erasing.address, token_a, erased_a))
            slow.start()
            _wait_until_blocked(stack_env)  # A's erasure has begun (its erased_at is fixed) and waits
            erased_b: list[bool] = []
            _erase(stack_env, erasing.address, token_b, erased_b)
            time.sleep(2 * CHECK_SECONDS + 0.5)  # the serving replica sees B's erasure and clears its cache
            assert _tokenize(stack_env, serving.address, ip_b) != token_b  # (it did: B's value got a new token)
            # The ETL keeps sending A's value meanwhile: A is still stored, so it is cached again.
            assert _tokenize(stack_env, serving.address, ip_a) == token_a
            locker.rollback()  # the lock goes: A's erasure commits
        slow.join(30)
        assert erased_a == [True] and erased_b == [True]
        time.sleep(2 * CHECK_SECONDS + 0.5)  # well past the serving replica's next checks
        again = _tokenize(stack_env, serving.address, ip_a)
    assert again != token_a, "the other replica still hands out the erased token for the erased value"
