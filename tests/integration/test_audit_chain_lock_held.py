"""A session of the serving role holding the audit chain's lock idle cannot freeze the vault (attack 26, F2).

With the serving role's password, one session inserts an audit row and leaves its transaction
open: the chain trigger's advisory lock stays held. Before migration 0035 every reveal then waited
for ever (a one-token Detokenize still waiting after 90 s). Now the append gives up after 2 s, the
call is answered UNAVAILABLE with a message naming the lock, and the vault's audit upkeep ends
the session once it has idled 5 s holding it: reveals succeed again, and the open transaction,
with its row, is gone. Since review 33 (R33-1) the vault ends it once an append has waited 1 s for
it: the first reveal is served, after about 1.2 s.
"""

from __future__ import annotations

import threading
import time

import grpc
import psycopg
import pytest

from tests.conftest import RunningVault
from tests.integration.fresh_values import Revealer, issue_fresh_ip
from vault_service.adapters.postgres.chain_lock import AUDIT_CHAIN_LOCK


@pytest.mark.parametrize("holding", ["idle", "active", "waiting"])
def test_a_session_holding_the_audit_chain_lock_makes_calls_fail_fast_and_is_ended(
    stack_env: dict[str, str], vault: RunningVault, holding: str
) -> None:
    value, token = issue_fresh_ip(stack_env, vault)
    # No transparent retry (client_channel's): each UNAVAILABLE is seen here, not retried by gRPC.
    reveal = Revealer(stack_env, vault, token, "CASE-F2")

    with psycopg.connect(stack_env["PG_VAULT_DSN"]) as rogue:  # the serving role; a transaction left open
        rogue.execute(
            "INSERT INTO vault.audit_log (client, action, item_count, outcome) VALUES ('x', 'detokenize', 0, 'ok')"
        )
        holder = rogue.execute("SELECT pg_backend_pid()").fetchone()
        assert holder is not None
        with psycopg.connect(stack_env["PG_VAULT_DSN"], autocommit=True) as look:
            held = look.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND pid = %s AND granted",
                (AUDIT_CHAIN_LOCK, holder[0]),
            ).fetchone()
        assert held == (1,)  # the chain's lock, held by the open transaction
        sleeping: list[BaseException] = []
        relay = _Relay(stack_env["PG_VAULT_DSN"]) if holding == "waiting" else None
        if relay is not None:  # waits on a relay of short blockers, one after the other (attack 28, F4)
            relay.start()

            def wait_in_the_transaction() -> None:
                try:
                    rogue.execute(
                        "SELECT vault.hold_key_job(k) FROM generate_series(%s, %s) k",  # the role's only way now
                        (_RELAY_KEY, _RELAY_KEY + 999),
                    )
                except psycopg.OperationalError as error:
                    sleeping.append(error)

            sleeper = threading.Thread(target=wait_in_the_transaction, daemon=True)
            sleeper.start()
        if holding == "active":  # a statement running inside the transaction, not idle: ended all the same

            def sleep_in_the_transaction() -> None:
                try:
                    rogue.execute("SELECT pg_sleep(60)")
                except psycopg.OperationalError as error:
                    sleeping.append(error)

            sleeper = threading.Thread(target=sleep_in_the_transaction, daemon=True)
            sleeper.start()

        started = time.monotonic()
        answer = None
        try:  # since review 33 (R33-1) the holder is ended once the reveal's append has waited 1 s for it
            answer = reveal(timeout=20)
        except grpc.RpcError as refused:  # else it fails fast, naming the lock
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
            assert "audit chain's" in str(refused.details())
        failed_after = time.monotonic() - started
        assert failed_after < 6  # one or two appends of 2 s each (the reveal's, a refusal's), never a hang

        while answer is None:
            try:
                answer = reveal(timeout=20)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() - started < 20, "the session holding the lock was never ended"
                time.sleep(0.5)
        served_after = time.monotonic() - started
        assert answer == value
        if relay is not None:
            relay.stop()
            # Ended once seen holding the lock 5 s, though it waits (before: never while the relay ran).
            assert served_after < 15, f"the holder waiting on a relay kept the lock {served_after:.1f} s"
            assert relay.ended < 8, f"the watch ended {relay.ended} blockers of the relay instead of the holder"
        if holding in ("active", "waiting"):
            sleeper.join(timeout=10)
            assert sleeping, f"the {holding} session was not ended"
        else:
            with pytest.raises(psycopg.OperationalError):  # the vault ended it: its transaction and row are gone
                rogue.execute("SELECT 1")
    reveal.close()
    print(f"\n{holding}: first call answered after {failed_after:.1f} s; served after {served_after:.1f} s")


_RELAY_KEY = 7_700_000
"""The first key-job lock of the relay: the rogue takes 7,700,000, 7,700,001, ... in turn (migration 0045 leaves the
role no advisory lock but the vault's: the key-job locks, up to 4 in a transaction; the rogue is ended long before)."""


class _Relay:
    """Sessions of the serving role each holding the next advisory key the rogue will wait for, three ahead.

    The attack 28, F4 relay: a blocker ended by the watch is replaced at once by the next one, so the rogue,
    holding the chain's lock, always waits and never goes idle.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.ended = 0

    def start(self) -> None:
        """Open the first blockers, then keep three ahead in a thread."""
        self._thread.start()
        time.sleep(0.5)

    def stop(self) -> None:
        """Stop opening blockers; close those left."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        held: list[psycopg.Connection] = []
        key = _RELAY_KEY
        with psycopg.connect(self._dsn, autocommit=True) as look:
            try:
                while not self._stop.is_set():
                    pids = [c.info.backend_pid for c in held]
                    alive = {
                        row[0] for row in look.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
                    }
                    for conn in [c for c in held if c.info.backend_pid not in alive]:
                        held.remove(conn)
                        self.ended += 1
                        conn.close()
                    while len(held) < 3:
                        conn = psycopg.connect(self._dsn)  # a transaction left open, holding the key
                        conn.execute("SELECT vault.try_claim_key_job(%s)", (key,))  # exclusively
                        held.append(conn)
                        key += 1
                    time.sleep(0.05)
            finally:
                for conn in held:
                    conn.close()
