"""Two writers issuing a token for the same new value at once: one token wins, everyone gets it.

Within one process a call leaves the values another call is inserting to it and reads their
tokens back; across processes a plain insert that meets another writer's value (an exclusion
violation, or a deadlock when each waits for the other) is done again with ON CONFLICT DO
NOTHING, and the tokens of values another writer issued first are read back.
These tests drive that against the real database of the stack.
"""

from __future__ import annotations

import threading
import time
import uuid

import psycopg

from tests.conftest import RunningVault
from vault_service.adapters.postgres.keys import KEYS_LOCK
from vault_service.domain.crypto import fingerprint, seal
from vault_service.domain.errors import VaultError
from vault_service.domain.token_types import TokenType
from vault_service.domain.tokens import new_tokens
from vault_service.service.ports import NewTokenRow

IP = TokenType.IP


def _fresh_ips(count: int) -> list[str]:
    """IPv4 values no other test uses (from a random /16 of 10.0.0.0/8)."""
    base = uuid.uuid4().int
    return [f"10.{base % 256}.{(base >> 8) % 256 + n // 256 % 256}.{n % 256}" for n in range(count)]


def _rows(vault: RunningVault, values: list[str]) -> list[NewTokenRow]:
    ring = vault.wired.keys.ring
    dek, fp_key = ring.active_encryption_key, ring.fingerprint_key
    return [
        NewTokenRow(token, IP.type_name, fingerprint(fp_key, IP, v), fp_key.key_id, dek.key_id, seal(dek, IP, token, v))
        for v, token in zip(values, new_tokens(IP, len(values)), strict=True)
    ]


def test_a_writer_that_lost_the_race_gets_the_winners_tokens_and_adds_nothing(vault: RunningVault) -> None:
    # The live keys (other tests of the session may have rotated them since this vault looked).
    store, generation = vault.wired.token_store, vault.wired.keys.refresh().generation
    values = _fresh_ips(3)
    races = store.races
    first = store.insert_new(_rows(vault, values[:2]), generation).tokens()
    assert len(first) == 2 and store.races == races
    late = _rows(vault, values)  # two of three were issued meanwhile, under other tokens
    inserted = store.insert_new(late, generation)
    result = inserted.tokens()
    assert store.races == races + 2  # the two values another writer issued first, counted
    found = store.find_by_fingerprints(IP.type_name, list(first))
    assert inserted.theirs == found  # their rows read back whole, as the lookup reads them: no second query
    assert {fp: result[fp] for fp in first} == first
    assert result[late[2].fingerprint] == late[2].token
    assert len(store.find_by_fingerprints(IP.type_name, [r.fingerprint for r in late])) == 3


def test_concurrent_tokenize_of_the_same_new_values_gives_one_token_each(vault: RunningVault) -> None:
    values = _fresh_ips(300)
    start = threading.Barrier(6)
    results: list[list[str | VaultError]] = []

    def tokenize() -> None:
        start.wait()
        results.append(vault.wired.vault.tokenize("etl-service", [(IP, v) for v in values]))

    threads = [threading.Thread(target=tokenize) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6 and all(r == results[0] for r in results)
    assert all(isinstance(t, str) and t.startswith("ip_") for t in results[0])
    assert len(set(results[0])) == 300


def test_a_call_leaves_values_another_call_is_inserting_to_it_and_reads_back_its_tokens(
    vault: RunningVault, stack_env: dict[str, str]
) -> None:
    """Calls of one process do not race: the second waits for the first's insert (no unique violation)."""
    store, generation = vault.wired.token_store, vault.wired.keys.refresh().generation
    values = _fresh_ips(50)
    first_rows, second_rows = _rows(vault, values), _rows(vault, values)  # same values, other tokens
    results: dict[str, dict[bytes, str]] = {}
    races, merged = store.races, store.merged_batches
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin:
        admin.execute("SELECT pg_advisory_lock(%s)", (KEYS_LOCK,))  # inserts wait for the key lock
        first = threading.Thread(target=lambda: results.update(first=store.insert_new(first_rows, generation).tokens()))
        first.start()
        _wait_for_a_lock_wait(admin)  # the first call has claimed its values and waits in the database
        second = threading.Thread(
            target=lambda: results.update(second=store.insert_new(second_rows, generation).tokens())
        )
        second.start()
        second.join(1.0)
        assert second.is_alive()
        assert _lock_waiters(admin) == 1  # the second waits in the process for the first, not in the database
        admin.execute("SELECT pg_advisory_unlock(%s)", (KEYS_LOCK,))
        first.join(10)
        second.join(10)
    assert results["first"] == {r.fingerprint: r.token for r in first_rows}
    assert results["second"] == results["first"]  # the first call's tokens, read back
    assert store.races == races + 50 and store.merged_batches == merged


def test_a_plain_insert_that_meets_a_value_issued_meanwhile_is_done_again_and_keeps_the_winner(
    vault: RunningVault,
) -> None:
    store, generation = vault.wired.token_store, vault.wired.keys.refresh().generation
    values = _fresh_ips(20)
    early = _rows(vault, values[:5])
    store.insert_new(early, generation)  # another writer (process) issued five of them
    merged = store.merged_batches
    late = _rows(vault, values)
    result = store.insert_new(late, generation).tokens()
    assert store.merged_batches == merged + 1
    assert {r.fingerprint: result[r.fingerprint] for r in early} == {r.fingerprint: r.token for r in early}
    assert all(result[r.fingerprint] == r.token for r in late[5:])


def _lock_waiters(admin: psycopg.Connection) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
    ).fetchone()
    return int(row[0]) if row else 0


def _wait_for_a_lock_wait(admin: psycopg.Connection) -> None:
    deadline = time.monotonic() + 10
    while _lock_waiters(admin) == 0:
        if time.monotonic() > deadline:
            raise AssertionError("the insert never waited for the key lock")
        time.sleep(0.02)


def test_rows_the_database_drops_without_an_error_get_no_token(vault: RunningVault, stack_env: dict[str, str]) -> None:
    """A plain insert storing fewer rows than sent (a trigger of the database owner's) hands out nothing unstored."""
    store, generation = vault.wired.token_store, vault.wired.keys.refresh().generation
    rows = _rows(vault, _fresh_ips(3))
    races, merged = store.races, store.merged_batches
    with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin:
        admin.execute(
            "CREATE FUNCTION public.tv_test_drop_rows() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN RETURN NULL; END $$"
        )
        admin.execute(
            "CREATE TRIGGER tv_test_drop_rows BEFORE INSERT ON vault.tokens"
            " FOR EACH ROW EXECUTE FUNCTION public.tv_test_drop_rows()"
        )
        try:
            result = store.insert_new(rows, generation).tokens()
        finally:
            admin.execute("DROP TRIGGER tv_test_drop_rows ON vault.tokens")
            admin.execute("DROP FUNCTION public.tv_test_drop_rows()")
    assert result == {}
    assert store.merged_batches == merged + 1
    assert store.races == races  # nobody else issued them: not counted as races


def _wait_for_a_transaction_wait(admin: psycopg.Connection) -> None:
    deadline = time.monotonic() + 10
    while True:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'transactionid'"
        ).fetchone()
        if row and row[0]:
            return
        if time.monotonic() > deadline:
            raise AssertionError("the insert never waited for the other writer")
        time.sleep(0.02)


def test_two_writers_each_waiting_for_the_other_end_with_one_token_per_value(
    vault: RunningVault, stack_env: dict[str, str]
) -> None:
    """Another process holds X and goes on to insert Y while this one, having inserted Y, waits on X.

    PostgreSQL breaks the deadlock by aborting the writer that waited first (this one); its
    batch is then merged and reads back the other writer's tokens.
    """
    store, generation = vault.wired.token_store, vault.wired.keys.refresh().generation
    values = _fresh_ips(2)
    theirs = _rows(vault, values)
    ours = list(reversed(_rows(vault, values)))  # Y first, then X
    merged = store.merged_batches
    insert = (
        "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed)"
        " VALUES (%s, %s, %s, %s, %s, %s)"
    )
    result: dict[bytes, str] = {}
    with (
        psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin,
        psycopg.connect(stack_env["PG_VAULT_DSN"]) as other,  # the other writer, as the service's role
    ):
        x, y = theirs
        other.execute(insert, (x.token, x.token_type, x.fingerprint, x.fingerprint_key_id, x.dek_id, x.sealed))
        writer = threading.Thread(target=lambda: result.update(store.insert_new(ours, generation).tokens()))
        writer.start()
        _wait_for_a_transaction_wait(admin)  # ours inserted Y and waits for the other's X
        other.execute(insert, (y.token, y.token_type, y.fingerprint, y.fingerprint_key_id, y.dek_id, y.sealed))
        other.commit()  # reached once PostgreSQL aborted ours
        writer.join(timeout=30)
    assert not writer.is_alive()
    assert result == {r.fingerprint: r.token for r in theirs}
    assert store.merged_batches == merged + 1
