"""Attack 42: a listener blocked flushing to a client that stopped reading, after its read pass committed (0067).

A backend reads its notifications in a transaction of its own, then flushes them to its client outside it
(ProcessIncomingNotify's pq_flush, ReadyForQuery's). If its client does not read, that flush blocks: state 'idle',
xact_start NULL, wait_event ClientWrite. PostgreSQL's blocking send handles only the die interrupt, so later
notify interrupts are never processed and the backend's queue position stays where the pass ended: it holds the
tail. The NOTIFY rule of 0053-0066 took only sessions in a transaction, so it never ended one (the queue to the cap,
or the vault's or the ETL's sessions ended instead). Migration 0067 ends every session seen blocked writing to its
client outside a statement at two consecutive looks, first and in one look. The real watchdog, the test's own
cluster; the flood stops at CAP whatever happens.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import psycopg
import pytest

from devstack.postgres import Postgres
from tests.integration.member_logins import member_login
from tests.integration.test_lock_watchdog import _lines, private_postgres, watchdog
from tests.integration.test_notify_queue_watchdog import QUEUE_MAX_BYTES, _queue_bytes, _there
from vault_service.adapters.postgres.notify_queue import NOTIFY_QUEUE_BOUND

__all__ = ["private_postgres"]  # the fixture, used by name

CAP = 64 * 2**20
"""The flood stops here in any case."""
BOUND_BYTES = NOTIFY_QUEUE_BOUND * QUEUE_MAX_BYTES
_FLOOD = "SELECT count(pg_notify('vault_events', repeat('x', 7900) || g)) FROM generate_series(1, 128) g"
"""~1 MB of notifications on a channel the attacker does not listen to (as the vault's own NOTIFYs)."""
_STUCK = ("idle", True, "ClientWrite")
_ENDED = "while the NOTIFY queue grows past its bound"


def _state(admin: psycopg.Connection, pid: int) -> tuple[object, ...] | None:
    return admin.execute(
        "SELECT state, xact_start IS NULL, wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)
    ).fetchone()


def _stuck_listener(stack: contextlib.ExitStack, dsn: str, admin_dsn: str) -> tuple[int, float]:
    """The attack, with `dsn`'s login only: a listener on its own channel whose client stops reading (a 4 kB receive
    buffer), fed small notifications by a second session until its backend blocks in the flush after its pass's
    commit (seen so for 0.3 s). (Its pid, the seconds it took.)

    A pass that took more than the backend's 8 kB send buffer (notifications piling up while the machine is busy)
    blocks inside its transaction instead and never commits: that listener is ended and a new one fed, within 40 s."""
    with psycopg.connect(dsn, autocommit=True) as feeder, psycopg.connect(admin_dsn, autocommit=True) as admin:
        started = time.monotonic()
        while time.monotonic() - started < 40:
            pid = _blocked_after_commit(stack, dsn, feeder, admin, started + 40)
            if pid is not None:
                return pid, time.monotonic() - started
        raise AssertionError("no listener blocked after its pass's commit in 40 s")


def _blocked_after_commit(
    stack: contextlib.ExitStack, dsn: str, feeder: psycopg.Connection, admin: psycopg.Connection, deadline: float
) -> int | None:
    """One listener fed until it blocks after its commit (its pid), or None: it blocked inside a pass (ended here)."""
    listener = stack.enter_context(contextlib.closing(psycopg.connect(dsn, autocommit=True)))
    sock = socket.socket(fileno=listener.pgconn.socket)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.detach()
    channel = f"mine_{listener.info.backend_pid}"
    listener.execute(f"LISTEN {channel}")
    pid = listener.info.backend_pid
    inside_since: float | None = None
    while time.monotonic() < deadline:
        state = _state(admin, pid)
        if state == _STUCK:
            time.sleep(0.3)
            if _state(admin, pid) == _STUCK:
                return pid
            continue
        if state is not None and state[1] is False and state[2] == "ClientWrite":
            inside_since = inside_since or time.monotonic()
            if time.monotonic() - inside_since > 3:  # blocked inside its pass for good: start over
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                return None
            time.sleep(0.02)  # blocked inside a pass: let it get to its commit
            continue
        inside_since = None
        feeder.execute("SELECT pg_notify(%s, repeat('y', 1000))", (channel,))  # 1 kB: a pass fits in 8 kB
    return None


def _flood(admin: psycopg.Connection, flooder: psycopg.Connection, held: list[int], seconds: float) -> float:
    """~1 MB, then 50 ms, until CAP, `seconds` or every one of `held` gone; then one more (the tail moves only when a
    notifier writes). (The queue's peak.)"""
    peak, started = _queue_bytes(admin), time.monotonic()
    while peak < CAP and time.monotonic() - started < seconds and any(_there(admin, pid) for pid in held):
        flooder.execute(_FLOOD)
        peak = max(peak, _queue_bytes(admin))
        time.sleep(0.05)
    if peak < CAP:
        flooder.execute(_FLOOD)
    return peak


def _ended(log_file: Path) -> list[dict[str, object]]:
    return [line for line in _lines(log_file) if _ENDED in str(line.get("message"))]


@pytest.mark.timeout(120)
def test_an_analysts_listener_blocked_in_its_flush_after_commit_is_ended_and_the_queue_cut(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """A42-1, the analysts' shared login: on 0066 the queue grew from the bound to CAP with the watchdog running, the
    listener never ended; now it is the first and only session ended and the queue falls back under the bound."""
    pg = private_postgres
    log_file = tmp_path / "lock_watchdog.log"
    with contextlib.ExitStack() as stack:
        admin = stack.enter_context(psycopg.connect(pg.admin_dsn, autocommit=True))
        flooder = stack.enter_context(psycopg.connect(pg.admin_dsn, autocommit=True))
        held, took = _stuck_listener(stack, pg.analyst_dsn, pg.admin_dsn)
        stack.enter_context(watchdog(pg, log_file))
        time.sleep(0.5)
        started = time.monotonic()
        peak = _flood(admin, flooder, [held], 10)
        seconds = time.monotonic() - started
        after = _queue_bytes(admin)
        ended = [(line.get("pid"), line.get("usage")) for line in _ended(log_file)]
        print(
            f"\nA42-1 analyst: stuck after {took:.1f} s; queue peak {peak / 2**20:.1f} MB in {seconds:.1f} s "
            f"(bound {BOUND_BYTES / 2**20:.1f} MB), {after / 2**20:.1f} MB after; listener {_state(admin, held)}; "
            f"ended {ended}"
        )
        assert not _there(admin, held), "the stalled listener was not ended"
        assert [pid for pid, _ in ended] == [held]
        assert peak < CAP
        assert after < BOUND_BYTES, "the queue was not cut"


@pytest.mark.timeout(120)
def test_a_vault_login_listener_blocked_in_its_flush_is_ended_before_the_vaults_request_sessions(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """A42-2: pod A's vault login holds the tail so; pod B's vault session serves slow requests (0.4 s transactions,
    as a batch under load, reading its replies at once). On 0066 pod B's sessions were ended (each end failing a
    request), never the holder; now the holder is the first and only session ended, pod B keeps its connection."""
    pg = private_postgres
    log_file = tmp_path / "lock_watchdog.log"
    stop = threading.Event()
    request_pids: list[int] = []
    failed = [0]
    served = [0]
    with contextlib.ExitStack() as stack:
        admin = stack.enter_context(psycopg.connect(pg.admin_dsn, autocommit=True))
        flooder = stack.enter_context(psycopg.connect(pg.admin_dsn, autocommit=True))
        pod_a = stack.enter_context(member_login(pg.admin_dsn, "tokenvault_vault", 4))
        pod_b = stack.enter_context(member_login(pg.admin_dsn, "tokenvault_vault", 8))
        held, took = _stuck_listener(stack, pod_a, pg.admin_dsn)

        def serve() -> None:  # pod B's pool connection: reconnects after an end, as a pool does
            while not stop.is_set():
                try:
                    with psycopg.connect(pod_b, autocommit=True) as conn:
                        request_pids.append(conn.info.backend_pid)
                        while not stop.is_set():
                            with conn.transaction():
                                conn.execute("SELECT pg_sleep(0.4)")
                            served[0] += 1
                except psycopg.Error:
                    failed[0] += 1

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        try:
            stack.enter_context(watchdog(pg, log_file))
            time.sleep(0.5)
            peak = _flood(admin, flooder, [held], 8)
            time.sleep(0.5)  # a look or two more: no one else is ended
        finally:
            stop.set()
            server.join(5)
        after = _queue_bytes(admin)
        ended = [(line.get("pid"), line.get("login")) for line in _ended(log_file)]
        print(
            f"\nA42-2 vault login: stuck after {took:.1f} s; queue peak {peak / 2**20:.1f} MB, {after / 2**20:.1f} MB "
            f"after; holder {held} {_state(admin, held)}; ended {ended}; pod B served {served[0]}, failed "
            f"{failed[0]}, its sessions {request_pids}"
        )
        assert not _there(admin, held), "the holder was not ended"
        assert [pid for pid, _ in ended] == [held], "ended someone other than the holder"
        assert failed[0] == 0 and len(request_pids) == 1, "pod B's session was ended"
        assert peak < CAP
        assert after < BOUND_BYTES, "the queue was not cut"


@pytest.mark.timeout(120)
def test_an_etl_login_listener_blocked_in_its_flush_is_ended_and_the_etls_batches_kept(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """A42-3, the ETL's own role holding so while the ETL writes in back-to-back 0.1 s transactions: on 0066 the
    watchdog ended the ETL's sessions one per look (11 in 3.5 s), never the holder; now the holder is the first and
    only session ended, no batch fails."""
    pg = private_postgres
    log_file = tmp_path / "lock_watchdog.log"
    stop = threading.Event()
    etl_pids: list[int] = []
    failed = [0]
    with contextlib.ExitStack() as stack:
        admin = stack.enter_context(psycopg.connect(pg.admin_dsn, autocommit=True))
        flooder = stack.enter_context(psycopg.connect(pg.admin_dsn, autocommit=True))
        held, took = _stuck_listener(stack, pg.etl_dsn, pg.admin_dsn)

        def write() -> None:  # the ETL's writer: reconnects after an end
            while not stop.is_set():
                try:
                    with psycopg.connect(pg.etl_dsn, autocommit=True) as conn:
                        etl_pids.append(conn.info.backend_pid)
                        while not stop.is_set():
                            with conn.transaction():
                                conn.execute("SELECT pg_sleep(0.1)")
                except psycopg.Error:
                    failed[0] += 1

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        try:
            stack.enter_context(watchdog(pg, log_file))
            time.sleep(0.5)
            peak = _flood(admin, flooder, [held], 8)
            time.sleep(0.5)
        finally:
            stop.set()
            writer.join(5)
        after = _queue_bytes(admin)
        ended = [line.get("pid") for line in _ended(log_file)]
        print(
            f"\nA42-3 etl: stuck after {took:.1f} s; queue peak {peak / 2**20:.1f} MB, {after / 2**20:.1f} MB after;"
            f" holder {_state(admin, held)}; ended {ended}, ETL's: {sum(pid in etl_pids for pid in ended)}; ETL"
            f" batches failed {failed[0]}"
        )
        assert not _there(admin, held), "the holder was not ended"
        assert ended == [held], "ended someone other than the holder"
        assert failed[0] == 0 and len(etl_pids) == 1, "an ETL batch was ended"
        assert peak < CAP
        assert after < BOUND_BYTES, "the queue was not cut"


@pytest.mark.timeout(120)
def test_a_relay_of_stalled_listeners_is_ended_in_one_look(private_postgres: Postgres, tmp_path: Path) -> None:
    """Four listeners of the ETL's role, each stalled so at its own position: one look ends all four (a rule ending
    one per look let the next hold the tail in turn: 10 such took 2.5 s on the tester's prototype)."""
    pg = private_postgres
    log_file = tmp_path / "lock_watchdog.log"
    stalled: list[int] = []
    errors: list[BaseException] = []
    with contextlib.ExitStack() as stack:
        admin = stack.enter_context(psycopg.connect(pg.admin_dsn, autocommit=True))
        flooder = stack.enter_context(psycopg.connect(pg.admin_dsn, autocommit=True))

        listeners: list[contextlib.ExitStack] = []

        def stall() -> None:
            own = contextlib.ExitStack()
            listeners.append(own)
            try:
                stalled.append(_stuck_listener(own, pg.etl_dsn, pg.admin_dsn)[0])
            except BaseException as error:  # re-raised below, in the test's thread
                errors.append(error)

        threads = [threading.Thread(target=stall, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(45)
        for own in listeners:
            stack.enter_context(own)
        assert not errors, errors
        assert len(stalled) == 4
        stack.enter_context(watchdog(pg, log_file))
        time.sleep(0.5)
        peak = _flood(admin, flooder, stalled, 8)
        after = _queue_bytes(admin)
        ended = [(line.get("pid"), line.get("usage")) for line in _ended(log_file)]
        print(
            f"\nA42 relay: queue peak {peak / 2**20:.1f} MB, {after / 2**20:.1f} MB after; ended {ended}; "
            f"left {[pid for pid in stalled if _there(admin, pid)]}"
        )
        assert sorted(int(str(pid)) for pid, _ in ended) == sorted(stalled), "not every stalled listener was ended"
        assert len({usage for _, usage in ended}) == 1, "ended over more than one look"
        assert peak < CAP
        assert after < BOUND_BYTES, "the queue was not cut"
