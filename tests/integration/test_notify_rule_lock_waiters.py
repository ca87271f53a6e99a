"""Another pod's requests waiting on a lock are not the shield of a member login's listener (migration 0064).

Attack 35, N1: 0063 ended the vault's transactions youngest first and spared every key-lock holder of a login that
may not run pg_catalog's advisory functions. Pod A's member login of tokenvault_vault held the NOTIFY queue's tail
with a listener H (LISTEN; BEGIN) while another session G of it held the key-generation lock through the vault's own
vault.lock_key_generation(); pod B's requests (vault.lock_key_generation_shared, the vault's token insert) waited on
it, younger than H: the watchdog ended pod B's requests one per look instead of H, the queue rose to the tester's cap.
Now the vault's lock waiters go after its other transactions (the longest waiting first) and a key lock's holder of
any login is spared only to notify_queue_spared_until. The real watchdog, on a cluster of the test's own, with logins
made as Vault makes them; the notifier stops at RELAY_CAP_BYTES whatever happens.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import psycopg
import pytest

from devstack.postgres import Postgres
from tests.integration.member_logins import member_login
from tests.integration.test_lock_watchdog import _lines, private_postgres, watchdog
from tests.integration.test_notify_queue_watchdog import (
    _SEND,
    QUEUE_MAX_BYTES,
    RELAY_CAP_BYTES,
    _queue_bytes,
    _there,
)
from vault_service.adapters.postgres.notify_queue import NOTIFY_QUEUE_BOUND

__all__ = ["private_postgres"]  # the fixture, used by name

_ENDED = "while the NOTIFY queue grows past its bound"
_REQUEST = "SELECT vault.lock_key_generation_shared()"
"""Pod B's request: the vault's token insert takes the key-generation lock shared, waiting up to 2 s (tokens.py)."""
_BUDGET = "SELECT vault.take_call_budget('etl-service', 'tokenize', 1, 1, 100000, 1000000)"
"""The ETL client's metering row FOR UPDATE (0019/0038: a wait of at most 2 s), which the serving role may take."""


def _ends(log_file: Path) -> list[tuple[int, float]]:
    """(pid, the queue's usage in bytes) of each session the watchdog ended as a holder of the queue's tail."""
    return [
        (int(str(line["pid"])), float(str(line["usage"])) * QUEUE_MAX_BYTES)
        for line in _lines(log_file)
        if _ENDED in str(line.get("message"))
    ]


class _Requests:
    """Pod B's requests: each a transaction of `_REQUEST` in a session of its own, again when it times out."""

    def __init__(self, dsn: str, workers: int) -> None:
        self.dsn, self.stop = dsn, threading.Event()
        self.pids: set[int] = set()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        while not self.stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True)
                    with self.lock:
                        self.pids.add(conn.info.backend_pid)
                with conn.transaction():
                    conn.execute(_REQUEST)
                time.sleep(0.01)
            except psycopg.errors.LockNotAvailable:
                pass
            except psycopg.OperationalError:  # ended
                with contextlib.suppress(Exception):
                    conn.close()  # type: ignore[union-attr]
                conn = None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)


def _wait_on_budget_row(conn: psycopg.Connection, stop: threading.Event) -> None:
    """H, in its transaction, waits for the ETL client's metering row again each time its 2 s run out."""
    with contextlib.suppress(psycopg.OperationalError):
        while not stop.is_set():
            conn.execute("SAVEPOINT w")
            try:
                conn.execute(_BUDGET)
            except psycopg.errors.LockNotAvailable:
                conn.execute("ROLLBACK TO SAVEPOINT w")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("listener", ["idle in its transaction", "waiting on the blocker's row lock"])
def test_pod_as_listener_is_ended_before_pod_bs_requests_waiting_on_pod_as_key_lock(
    private_postgres: Postgres, tmp_path: Path, listener: str
) -> None:
    """Pod A: H (LISTEN; BEGIN; SELECT 1) holds the tail; G (no LISTEN) holds the key-generation lock exclusively
    through vault.lock_key_generation() (spared: under notify_queue_spared_until) and the ETL client's metering row.
    Pod B's requests wait for the key lock, younger than H. The queue passes the bound: H is the first session ended
    - not one of pod B's requests - and the queue is cut. Second case: H itself waits (for G's row, again each 2 s):
    a waiter as pod B's are, but the longest waiting, so still first. Before 0064, pod B's requests were ended first
    (22-25 of them in the tester's runs, H kept to the cap)."""
    pg = private_postgres
    bound_bytes = NOTIFY_QUEUE_BOUND * QUEUE_MAX_BYTES
    log_file = tmp_path / "lock_watchdog.log"
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        admin = stack.enter_context(psycopg.connect(pg.admin_dsn, autocommit=True))
        pods = {pod: stack.enter_context(member_login(pg.admin_dsn, "tokenvault_vault", 16)) for pod in "ab"}

        def conn(pod: str) -> psycopg.Connection:
            return stack.enter_context(contextlib.closing(psycopg.connect(pods[pod], autocommit=True)))

        holder, blocker, notifier = conn("a"), conn("a"), conn("a")
        stack.enter_context(watchdog(pg, log_file))
        time.sleep(0.5)  # its first looks
        holder.execute("LISTEN q")
        holder.execute("BEGIN")
        holder.execute("SELECT 1")  # H holds the tail from here
        h_pid = holder.info.backend_pid
        blocker.execute("BEGIN")
        blocker.execute("SET LOCAL lock_timeout = 0")
        blocker.execute("SELECT vault.lock_key_generation()")
        blocker.execute(_BUDGET)
        g_pid = blocker.info.backend_pid
        waiter = None
        if listener.startswith("waiting"):
            waiter = threading.Thread(target=_wait_on_budget_row, args=(holder, stop), daemon=True)
            waiter.start()
            stack.callback(waiter.join, 5)
            stack.callback(stop.set)
        b = _Requests(pods["b"], 4)
        stack.callback(b.close)
        time.sleep(0.6)  # pod B's requests wait, over 0.2 s and a look
        h_waits = admin.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (h_pid,)).fetchone()
        b_waiting = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid = ANY(%s)", (list(b.pids),)
        ).fetchone()
        peak, started, h_ended_after = 0.0, time.monotonic(), None
        while peak < RELAY_CAP_BYTES and time.monotonic() - started < 3:  # G's hold stays under the lock watch's 5 s
            notifier.execute(_SEND)
            peak = max(peak, _queue_bytes(admin))
            if not _there(admin, h_pid):
                h_ended_after = time.monotonic() - started
                break
            time.sleep(0.02)  # ~30 MB/s
        for _ in range(3):  # the tail moves when a notifier next writes a page
            notifier.execute(_SEND)
        after = _queue_bytes(admin)
        g_kept = _there(admin, g_pid)
        blocker.execute("ROLLBACK")
    ends = [pid for pid, _ in _ends(log_file)]
    named = {h_pid: "H", g_pid: "G"}
    print(
        f"NOTIFY-WAITERS [{listener}]: H's wait {h_waits}, pod B waiting {b_waiting};"
        f" H ended {h_ended_after} s into the sends, queue peak {peak / 2**20:.1f} MB"
        f" (bound {bound_bytes / 2**20:.1f} MB), after {after / 2**20:.1f} MB;"
        f" ends {[named.get(p, 'B' if p in b.pids else p) for p in ends]}; G kept {g_kept}"
    )
    assert b_waiting is not None and b_waiting[0] >= 3, b_waiting  # pod B's requests do wait on G
    if waiter is not None:
        assert h_waits == ("Lock",), h_waits  # H is a waiter too
    assert h_ended_after is not None, f"H was not ended (queue {peak / 2**20:.0f} MB; ends {ends})"
    assert ends[:1] == [h_pid], f"pod B's waiting requests were ended before H: {ends}"
    assert not [p for p in ends if p in b.pids], ends
    assert g_kept, "G (a key lock's holder, under the mark) was ended"
    assert after < bound_bytes, after


@pytest.mark.timeout(60)
def test_a_key_lock_holder_of_a_login_without_the_advisory_functions_is_spared_only_to_the_mark(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """A listener the rule may not end (a superuser's) holds the tail; pod A's G holds the key-generation lock through
    vault.lock_key_generation() - its login may not run pg_catalog's advisory functions (0045's revoke). Before 0064
    such a holder was spared at any usage; now, past notify_queue_spared_until (set to 3 bounds here), it is ended."""
    pg = private_postgres
    spared_until = 3 * NOTIFY_QUEUE_BOUND
    log_file = tmp_path / "lock_watchdog.log"
    with contextlib.ExitStack() as stack:
        admin = stack.enter_context(psycopg.connect(pg.admin_dsn, autocommit=True))
        pod_a = stack.enter_context(member_login(pg.admin_dsn, "tokenvault_vault", 4))
        with admin.transaction():
            admin.execute("SET LOCAL ROLE tokenvault_owner")
            admin.execute("UPDATE watchdog.rule_bounds SET notify_queue_spared_until = %s", (spared_until,))
        listener = stack.enter_context(psycopg.connect(pg.admin_dsn, autocommit=True))
        blocker = stack.enter_context(contextlib.closing(psycopg.connect(pod_a, autocommit=True)))
        # The sends are a superuser's too: a vault login's notifier, busy at most looks, is itself a candidate by
        # its busy run since 0065 (CI: it was ended before G) - not what this test is about.
        notifier = stack.enter_context(psycopg.connect(pg.admin_dsn, autocommit=True))
        listener.execute("LISTEN q")
        listener.execute("BEGIN")
        listener.execute("SELECT 1")  # the superuser's listener holds the tail: never ended
        blocker.execute("BEGIN")
        blocker.execute("SELECT vault.lock_key_generation()")
        g_pid = blocker.info.backend_pid
        stack.enter_context(watchdog(pg, log_file))
        time.sleep(0.5)  # its first looks
        peak, started, g_ended_after = 0.0, time.monotonic(), None
        while peak < 2 * spared_until * QUEUE_MAX_BYTES and time.monotonic() - started < 3:
            notifier.execute(_SEND)
            peak = max(peak, _queue_bytes(admin))
            if not _there(admin, g_pid):
                g_ended_after = time.monotonic() - started
                break
            time.sleep(0.02)
        listener.execute("ROLLBACK")
    ends = _ends(log_file)
    print(
        f"NOTIFY-KEY-SPARE: G ended {g_ended_after} s into the sends at {[round(u / 2**20, 1) for _, u in ends]} MB"
        f" (mark {spared_until * QUEUE_MAX_BYTES / 2**20:.1f} MB), peak {peak / 2**20:.1f} MB"
    )
    assert g_ended_after is not None, f"G was spared past the mark (queue {peak / 2**20:.0f} MB)"
    assert [pid for pid, _ in ends] == [g_pid], ends
    assert ends[0][1] > spared_until * QUEUE_MAX_BYTES, ends
