"""A login's listener holding the NOTIFY queue's tail while it fills is ended by the operators' watchdog (0053).

Review 35, R35-1: LISTEN/NOTIFY need no privilege; an analyst's `LISTEN q; BEGIN; SELECT 1;` left idle in transaction
holds the queue's tail (a backend reads notifications only between transactions) while a second session sends ~8 KB
notifications: pg_notify grew 1.16 GB in 5 s, the data disk filled, the ETL's writes failed DiskFull and the
checkpointer PANICked. The watchdog (the real process, on a cluster of the test's own) ends sessions in a transaction
while pg_notification_queue_usage() grows past NOTIFY_QUEUE_BOUND (0053, 0054; 0056: also those begun after the
crossing - attack 32, F1's relay of listeners). Bounded: the notifier stops at CAP_BYTES (RELAY_CAP_BYTES) of queue
whatever happens (an unbounded probe once filled this machine's disk).
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import psycopg
import pytest

from devstack.postgres import ANALYST_LOGIN, Postgres
from devstack.procs import free_port
from tests.integration.member_logins import member_login
from tests.integration.test_lock_watchdog import _lines, _metric, private_postgres, watchdog
from vault_service.adapters.postgres.notify_queue import NOTIFY_QUEUE_BOUND

__all__ = ["private_postgres"]  # the fixture, used by name

QUEUE_MAX_BYTES = 8 * 1024**3
"""PostgreSQL 15's NOTIFY queue at most (pg_notification_queue_usage() is a share of it)."""
CAP_BYTES = 48 * 1024**2
"""The notifier stops here in any case: a few tens of MB of pg_notify on the test's own cluster."""
_SEND = "SELECT count(pg_notify('q', repeat('x', 7900) || g)) FROM generate_series(1, 128) g"
"""~1 MB of notifications, one transaction (autocommit): the reviewer's 7,900-byte payloads."""
RELAY_CAP_BYTES = 96 * 1024**2
"""The relay's notifier stops here in any case (on 0054's rule it got there)."""
_ENDED = "while the NOTIFY queue grows past its bound"


def _queue_bytes(admin: psycopg.Connection) -> float:
    row = admin.execute("SELECT pg_notification_queue_usage()").fetchone()
    return float(row[0]) * QUEUE_MAX_BYTES if row else 0.0


def _there(admin: psycopg.Connection, pid: int) -> bool:
    return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (1,)


def _send_until_ended(
    admin: psycopg.Connection, notifier: psycopg.Connection, held: int, seconds: float
) -> tuple[float, float | None, float]:
    """Notifications sent (~1 MB, then a pause: ~10 MB/s) until session `held` is gone, the queue reaches CAP_BYTES
    or `seconds` pass; then three more, for the tail to move. (The queue's peak, when `held` was gone after the start
    or None, the queue after.)"""
    started = time.monotonic()
    peak, ended_after = _queue_bytes(admin), None
    while peak < CAP_BYTES and time.monotonic() - started < seconds:
        notifier.execute(_SEND)
        peak = max(peak, _queue_bytes(admin))
        if not _there(admin, held):
            ended_after = time.monotonic() - started
            break
        time.sleep(0.1)
    for _ in range(3):  # the tail moves when a notifier next writes a page
        notifier.execute(_SEND)
    return peak, ended_after, _queue_bytes(admin)


@pytest.mark.timeout(60)
def test_a_listener_idle_in_transaction_while_the_queue_fills_is_ended_and_the_etl_writes(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Without the watchdog the listener stays past the bound; with it, the sessions in a transaction older than the
    queue's growth are ended oldest first while it grows - an older bystander's, then the listener - within 2 s of the
    watchdog's start (one line each: pid, login, usage; counted), the queue is cut, the ETL's writes go on; a
    superuser's older transaction is spared. Before 0053 nothing ended it (the notifier reached CAP_BYTES)."""
    pg = private_postgres
    bound_bytes = NOTIFY_QUEUE_BOUND * QUEUE_MAX_BYTES
    port = free_port()
    log_file = tmp_path / "lock_watchdog.log"
    superuser = psycopg.connect(pg.admin_dsn, autocommit=True)  # closed, not committed, at the end
    bystander = psycopg.connect(pg.analyst_dsn, autocommit=True)
    listener = psycopg.connect(pg.analyst_dsn, autocommit=True)
    with (
        contextlib.closing(superuser),
        contextlib.closing(bystander),
        contextlib.closing(listener),
        psycopg.connect(pg.admin_dsn, autocommit=True) as admin,
        psycopg.connect(pg.analyst_dsn, autocommit=True) as notifier,
        psycopg.connect(pg.etl_dsn, autocommit=True) as etl,
    ):
        superuser.execute("BEGIN")  # older than the listener's: exempt
        superuser.execute("SELECT 1")
        bystander.execute("BEGIN")  # older than the listener's, listening to nothing: ended first, then the listener
        bystander.execute("SELECT 1")
        time.sleep(0.01)
        listener.execute("LISTEN q")
        listener.execute("BEGIN")
        listener.execute("SELECT 1")  # idle in transaction: the queue's tail stays here
        held = listener.info.backend_pid
        bystander_pid = bystander.info.backend_pid
        time.sleep(0.05)
        # without the watchdog: past the bound, and the listener stays
        while _queue_bytes(admin) <= 1.5 * bound_bytes:
            notifier.execute(_SEND)
        time.sleep(0.6)
        assert _there(admin, held), "the listener went by itself"
        before = _queue_bytes(admin)
        with watchdog(pg, log_file, {"TOKENVAULT_WATCHDOG_METRICS_PORT": str(port)}):
            peak, ended_after, after = _send_until_ended(admin, notifier, held, 8.0)
            etl.execute(
                "INSERT INTO public.etl_quarantine (event_id, sqs_message_id, reason, detail)"
                " VALUES ('notify-after', 'a', 'a', 'a')"
            )
            time.sleep(0.3)
            counted = _metric(port, 'tokenvault_lock_watchdog_notify_queue_sessions_total{ended="true"}')
            superuser_there = _there(admin, superuser.info.backend_pid)
        print(
            f"NOTIFY-WATCHDOG: queue {before / 2**20:.1f} MB held without the watchdog; listener ended"
            f" {ended_after} s after its start, queue peak {peak / 2**20:.1f} MB, after {after / 2**20:.1f} MB"
            f" (bound {bound_bytes / 2**20:.1f} MB, cap {CAP_BYTES / 2**20:.0f} MB)"
        )
    assert ended_after is not None and ended_after < 2.0, f"the listener was not ended (queue {peak / 2**20:.0f} MB)"
    assert after < bound_bytes, after
    assert superuser_there
    assert counted == 2.0
    lines = [line for line in _lines(log_file) if _ENDED in str(line.get("message"))]
    assert [line["pid"] for line in lines] == [bystander_pid, held], lines
    assert all(line["login"] == ANALYST_LOGIN and line["level"] == "ERROR" for line in lines)
    assert [line["sessions_ended"] for line in lines] == [1, 2]
    assert "xxxx" not in log_file.read_text()


@pytest.mark.timeout(30)
def test_an_analysts_listener_is_ended_before_an_older_vault_transaction(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Review 35, R35-1's order (0054): the serving role's session (a vault key job's hold) in a transaction OLDER than
    an analyst's listener idle in transaction, a notifier past the bound: the listener is ended, the vault's session
    is not (still there, the same transaction open), and the queue falls. On 0053's order (oldest first) the vault's
    session was ended first - an insider's analyst login could end the vault's or the ETL's sessions on demand."""
    pg = private_postgres
    bound_bytes = NOTIFY_QUEUE_BOUND * QUEUE_MAX_BYTES
    log_file = tmp_path / "lock_watchdog.log"
    vault = psycopg.connect(pg.vault_dsn, autocommit=True)
    listener = psycopg.connect(pg.analyst_dsn, autocommit=True)
    with (
        contextlib.closing(vault),
        contextlib.closing(listener),
        psycopg.connect(pg.admin_dsn, autocommit=True) as admin,
        psycopg.connect(pg.analyst_dsn, autocommit=True) as notifier,
    ):
        vault.execute("BEGIN")  # the key job's hold: older than the listener's transaction
        xid = vault.execute("SELECT txid_current()").fetchone()
        vault_pid = vault.info.backend_pid
        time.sleep(0.01)
        listener.execute("LISTEN q")
        listener.execute("BEGIN")
        listener.execute("SELECT 1")  # idle in transaction: the queue's tail stays here
        held = listener.info.backend_pid
        while _queue_bytes(admin) <= 1.5 * bound_bytes:
            notifier.execute(_SEND)
        with watchdog(pg, log_file):
            peak, ended_after, after = _send_until_ended(admin, notifier, held, 6.0)
            time.sleep(0.3)  # a look more: the vault's session is still not ended
            vault_there = _there(admin, vault_pid)
        print(
            f"NOTIFY-ORDER: listener ended {ended_after} s after the watchdog's start, queue peak"
            f" {peak / 2**20:.1f} MB, after {after / 2**20:.1f} MB; the vault's older session there: {vault_there}"
        )
        assert vault_there, "the vault's older session was ended (0053's order: oldest first)"
        assert vault.execute("SELECT txid_current()").fetchone() == xid  # the same transaction, still open
        assert vault.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert ended_after is not None and ended_after < 2.0, f"the listener was not ended (queue {peak / 2**20:.0f} MB)"
    assert after < bound_bytes, after
    lines = [line for line in _lines(log_file) if _ENDED in str(line.get("message"))]
    assert [(line["pid"], line["login"]) for line in lines] == [(held, ANALYST_LOGIN)], lines


class _Drain:
    """Reads a listener's notifications in a thread until stopped: it keeps up, so its position follows the head."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn, self.stop = conn, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for _ in self.conn.notifies(timeout=0.05):
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


_RELAYS = [
    ("analyst", "a transaction"),
    ("tokenvault_etl", "a transaction"),
    ("analyst", "an unread socket"),
]
"""Attack 32, F1's relay: the login of its two listeners, and how the second one holds the tail."""


@pytest.mark.timeout(60)
def test_a_relay_of_listeners_begun_after_the_queue_passed_its_bound_is_ended_and_the_vaults_session_kept(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Attack 32, F1, on one cluster and one watchdog, for each of _RELAYS: B (an analyst's older transaction), and H
    (LISTEN; BEGIN) hold the tail while the queue passes the bound; L listens and reads. The watchdog notes the
    crossing and ends B; with no growth it ends nothing more. THEN L begins holding - `BEGIN; SELECT 1` (an analyst's
    or the ETL's), or `SELECT 1` and its client stops reading its socket (its backend blocks sending, ClientWrite,
    its position stuck) - and a fast notifier sends. H is ended, the tail moves to L's position, already more than
    the bound behind the head: L is ended too (its transaction began after the crossing), the queue is cut, and the
    serving role's session in a transaction older than every crossing (a key job's hold) is never ended. On 0054's
    rule (only transactions begun before the crossing) L stayed, the queue reached CAP_BYTES and the vault's session
    was ended instead."""
    pg = private_postgres
    bound_bytes = NOTIFY_QUEUE_BOUND * QUEUE_MAX_BYTES
    log_file = tmp_path / "lock_watchdog.log"
    dsns = {ANALYST_LOGIN: pg.analyst_dsn, "tokenvault_etl": pg.etl_dsn}
    vault = psycopg.connect(pg.vault_dsn, autocommit=True)
    with (
        contextlib.closing(vault),
        psycopg.connect(pg.admin_dsn, autocommit=True) as admin,
        watchdog(pg, log_file),
    ):
        vault.execute("BEGIN")  # a key job's hold, older than every crossing below
        xid = vault.execute("SELECT txid_current()").fetchone()
        vault_pid = vault.info.backend_pid
        expected: list[tuple[int, str]] = []
        for login, shape in _RELAYS:
            bystander = psycopg.connect(pg.analyst_dsn, autocommit=True)
            holder = psycopg.connect(dsns[login], autocommit=True)
            relay = psycopg.connect(dsns[login], autocommit=True)
            with (
                contextlib.closing(bystander),
                contextlib.closing(holder),
                contextlib.closing(relay),
                psycopg.connect(dsns[login], autocommit=True) as notifier,
            ):
                bystander.execute("BEGIN")
                bystander.execute("SELECT 1")
                holder.execute("LISTEN q")
                holder.execute("BEGIN")
                holder.execute("SELECT 1")  # holds the tail from the start
                relay.execute("LISTEN q")
                drain = _Drain(relay)
                pids = (bystander.info.backend_pid, holder.info.backend_pid, relay.info.backend_pid)
                expected += [(pids[0], ANALYST_LOGIN), (pids[1], login), (pids[2], login)]
                while _queue_bytes(admin) <= 1.3 * bound_bytes:
                    notifier.execute(_SEND)
                # the crossing noted, the bystander ended (the oldest); with no growth nothing more
                deadline = time.monotonic() + 3
                while _there(admin, pids[0]) and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(0.3)
                assert not _there(admin, pids[0]) and _there(admin, pids[1]), (login, shape)
                drain.close()
                relay.execute("BEGIN" if shape == "a transaction" else "SELECT 1")
                relay.execute("SELECT 1")  # now it holds (after the crossing); for the socket: nothing reads it
                peak, started, relay_ended_after = 0.0, time.monotonic(), None
                while peak < RELAY_CAP_BYTES and time.monotonic() - started < 8:
                    notifier.execute(_SEND)
                    peak = max(peak, _queue_bytes(admin))
                    if not _there(admin, pids[2]):
                        relay_ended_after = time.monotonic() - started
                        break
                    time.sleep(0.02)  # ~30 MB/s: a bound's worth between two looks
                for _ in range(3):  # the tail moves when a notifier next writes a page
                    notifier.execute(_SEND)
                after = _queue_bytes(admin)
                vault_there = _there(admin, vault_pid)
                print(
                    f"NOTIFY-RELAY[{login}, {shape}]: the later listener ended {relay_ended_after} s into the fast"
                    f" sends, queue peak {peak / 2**20:.1f} MB (bound {bound_bytes / 2**20:.1f} MB, cap"
                    f" {RELAY_CAP_BYTES / 2**20:.0f} MB), after {after / 2**20:.1f} MB; the vault's session there"
                    f" {vault_there}"
                )
                assert vault_there, f"the vault's older session was ended ({login}, {shape})"
                assert relay_ended_after is not None, f"the later listener was not ended (queue {peak / 2**20:.0f} MB)"
                assert after < bound_bytes, after
                time.sleep(0.3)  # a look under the bound: the watchdog starts over
        assert vault.execute("SELECT txid_current()").fetchone() == xid  # the same transaction, still open
    lines = [line for line in _lines(log_file) if _ENDED in str(line.get("message"))]
    assert [(line["pid"], line["login"]) for line in lines] == expected, lines


@pytest.mark.timeout(60)
def test_the_next_listener_of_a_relay_is_ended_once_the_queue_rises_again_not_at_the_last_ends_mark(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Attack 32, F1 (the watchdog's pace): H holds the tail, L read until the queue was at 2 bounds, then began a
    transaction; the queue is at 4 bounds when the watchdog starts and ends H. A slow notifier then sends: the tail
    moves to L (the queue falls to ~2 bounds) and rises again. L is ended at the first look at which it has risen
    (a few pages above its low since H's end), ~1 MB later. The watchdog before waited for the usage to pass its
    value at H's end (4 bounds): L held the queue for another 2 bounds (~5 s here), and each listener of a relay
    began a little ahead of the last could hold it up to the last end's mark, each end raising it."""
    pg = private_postgres
    bound_bytes = NOTIFY_QUEUE_BOUND * QUEUE_MAX_BYTES
    log_file = tmp_path / "lock_watchdog.log"
    holder = psycopg.connect(pg.analyst_dsn, autocommit=True)
    relay = psycopg.connect(pg.analyst_dsn, autocommit=True)
    with (
        contextlib.closing(holder),
        contextlib.closing(relay),
        psycopg.connect(pg.admin_dsn, autocommit=True) as admin,
        psycopg.connect(pg.analyst_dsn, autocommit=True) as notifier,
    ):
        holder.execute("LISTEN q")
        holder.execute("BEGIN")
        holder.execute("SELECT 1")
        relay.execute("LISTEN q")
        held, relay_pid = holder.info.backend_pid, relay.info.backend_pid
        drain = _Drain(relay)
        while _queue_bytes(admin) <= 2 * bound_bytes:
            notifier.execute(_SEND)
        time.sleep(0.2)  # L reads it all
        drain.close()
        relay.execute("BEGIN")
        relay.execute("SELECT 1")  # L holds from ~2 bounds ahead of H
        while _queue_bytes(admin) <= 4 * bound_bytes:
            notifier.execute(_SEND)
        with watchdog(pg, log_file):
            deadline = time.monotonic() + 5
            while _there(admin, held) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not _there(admin, held), "H was not ended"
            started, relay_ended_after, low = time.monotonic(), None, None
            while time.monotonic() - started < 4:
                notifier.execute(_SEND)  # ~1 MB every 0.3 s: the tail moves to L at the first
                if not _there(admin, relay_pid):
                    relay_ended_after = time.monotonic() - started
                    break
                low = _queue_bytes(admin) if low is None else low
                time.sleep(0.3)
    ends = [line for line in _lines(log_file) if _ENDED in str(line.get("message"))]
    usages = [float(str(line["usage"])) * QUEUE_MAX_BYTES for line in ends]
    print(
        f"NOTIFY-RELAY-PACE: H ended at {usages[0] / 2**20:.1f} MB; the queue at {(low or 0) / 2**20:.1f} MB once the"
        f" tail moved to L; L ended {relay_ended_after} s into the slow sends, at"
        f" {usages[1] / 2**20 if len(usages) > 1 else float('nan'):.1f} MB (bound {bound_bytes / 2**20:.1f} MB)"
    )
    assert [line["pid"] for line in ends] == [held, relay_pid], ends
    assert low is not None and low < 3 * bound_bytes, low  # the tail moved to L, ~2 bounds behind the head
    assert relay_ended_after is not None and relay_ended_after < 1.5, relay_ended_after
    assert usages[1] < usages[0], usages  # before the queue got back to H's mark


RELOCK_CAP_BYTES = 160 * 1024**2
"""The re-locker round's notifier stops here in any case (on 0060/0061 the queue got to ~100 MB)."""
_RULE_CALL = "SELECT pid, login FROM watchdog.end_notify_queue_holder()"


def _held_until_ended(
    pg: Postgres, admin: psycopg.Connection, relock: str | None
) -> tuple[int, float | None, float, list[int], bool]:
    """An analyst's listener H holding the tail, an analyst's notifier sending ~1 MB per statement until H is gone,
    the queue reaches RELOCK_CAP_BYTES or 8 s pass; with `relock` (a DSN), a session of the watchdog's role calling
    the rule at the start of transactions of 1.9 s, back to back (attack 33, A1). (H's pid, seconds from the queue
    passing the bound to H gone or None, the queue's peak in bytes, the pids the re-locker's calls ended, whether the
    re-locker's session was ended.)"""
    bound_bytes = NOTIFY_QUEUE_BOUND * QUEUE_MAX_BYTES
    stop = threading.Event()
    relocker_ends: list[int] = []
    relocker_gone: list[bool] = []

    def relocker() -> None:
        try:
            with psycopg.connect(relock or pg.watchdog_dsn, autocommit=True) as dog:
                while not stop.is_set():
                    dog.execute("BEGIN")
                    row = dog.execute(_RULE_CALL).fetchone()
                    if row and row[0] is not None:
                        relocker_ends.append(int(str(row[0])))
                    stop.wait(1.9)
                    dog.execute("COMMIT")
        except psycopg.Error:
            relocker_gone.append(True)

    with (  # closed, not committed: H is ended
        contextlib.closing(psycopg.connect(pg.analyst_dsn, autocommit=True)) as holder,
        contextlib.closing(psycopg.connect(pg.analyst_dsn, autocommit=True)) as notifier,
    ):
        holder.execute("LISTEN q")
        holder.execute("BEGIN")
        holder.execute("SELECT 1")
        held = holder.info.backend_pid
        thread = threading.Thread(target=relocker, daemon=True)
        if relock:
            thread.start()
            time.sleep(0.3)  # its first transaction begun
        started, crossed, held_for, peak = time.monotonic(), None, None, 0.0
        while time.monotonic() - started < 8:
            usage = _queue_bytes(admin)
            peak = max(peak, usage)
            if crossed is None and usage > bound_bytes:
                crossed = time.monotonic()
            if not _there(admin, held):
                held_for = None if crossed is None else time.monotonic() - crossed
                break
            if usage < RELOCK_CAP_BYTES:
                notifier.execute(_SEND)
                time.sleep(0.03)  # ~25 MB/s
            else:
                time.sleep(0.02)
        stop.set()
        thread.join(5) if relock else None
    return held, held_for, peak, relocker_ends, bool(relocker_gone)


@pytest.mark.timeout(60)
def test_a_watchdog_login_session_relocking_in_short_transactions_leaves_the_real_watchdogs_rule_on(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Attack 33, A1: on 0060/0061 the NOTIFY rule's state was one row, taken FOR UPDATE SKIP LOCKED; a session of
    the watchdog's login calling the rule in transactions of 1.9 s back to back (never past 0061's 2 s) kept it
    locked, the real watchdog's looks ended nothing (silently) and H was ended 3.25 s after the crossing, by the
    re-locker's call, at ~100 MB. With 0062 (the state per calling session) the real watchdog ends H as fast as
    when alone, and logs it."""
    pg = private_postgres
    log_file = tmp_path / "lock_watchdog.log"
    bound_bytes = NOTIFY_QUEUE_BOUND * QUEUE_MAX_BYTES
    with (
        psycopg.connect(pg.admin_dsn, autocommit=True) as admin,
        # another pod's login of its role: its own login's slots are all the watchdog's (attack 33, A4)
        member_login(pg.admin_dsn, "tokenvault_watchdog") as other_pod,
        watchdog(pg, log_file, {"TOKENVAULT_WATCHDOG_METRICS_PORT": str(free_port())}),
    ):
        time.sleep(0.5)  # its first looks
        alone, alone_for, alone_peak, _, _ = _held_until_ended(pg, admin, relock=None)
        deadline = time.monotonic() + 5
        while _queue_bytes(admin) > bound_bytes / 4 and time.monotonic() < deadline:  # cut once H is gone
            time.sleep(0.1)
        time.sleep(0.3)  # a look under the bound: the rule starts over
        held, held_for, peak, relocker_ends, relocker_gone = _held_until_ended(pg, admin, relock=other_pod)
    ends = [line for line in _lines(log_file) if _ENDED in str(line.get("message"))]
    print(
        f"NOTIFY-RELOCK: alone H ended {alone_for and round(alone_for, 2)} s after the crossing, peak"
        f" {alone_peak / 2**20:.0f} MB; with the re-locker {held_for and round(held_for, 2)} s, peak"
        f" {peak / 2**20:.0f} MB; the re-locker's calls ended {relocker_ends}, its session ended: {relocker_gone};"
        f" the real watchdog's ends {[line['pid'] for line in ends]}"
    )
    assert alone_for is not None and alone_for < 1.5, alone_for
    assert held_for is not None and held_for < 1.5, held_for  # on 0060/0061: 3.25 s, by the re-locker's call
    assert peak < max(2 * alone_peak, alone_peak + 24 * 2**20), (peak, alone_peak)  # on 0060/0061: ~100 MB vs ~21
    assert [line["pid"] for line in ends] == [alone, held], ends  # the real watchdog's ends, each logged
    assert relocker_ends == [], relocker_ends


_NOT_TAKEN = "could not take this watchdog's own state"


@pytest.mark.timeout(60)
def test_a_look_that_cannot_take_its_own_state_is_an_error_once_and_counted(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Migration 0062's guard: no login's session can lock the watchdog's own state row; a superuser's can (here, a
    stand-in for any path not known). The looks then end nothing: the watchdog says so as an ERROR, once, and counts
    each; once the lock is gone its next looks end the listener."""
    pg = private_postgres
    log_file = tmp_path / "lock_watchdog.log"
    port = free_port()
    bound_bytes = NOTIFY_QUEUE_BOUND * QUEUE_MAX_BYTES
    with (
        psycopg.connect(pg.admin_dsn, autocommit=True) as admin,
        contextlib.closing(psycopg.connect(pg.admin_dsn, autocommit=True)) as superuser,
        contextlib.closing(psycopg.connect(pg.analyst_dsn, autocommit=True)) as holder,
        contextlib.closing(psycopg.connect(pg.analyst_dsn, autocommit=True)) as notifier,
        watchdog(pg, log_file, {"TOKENVAULT_WATCHDOG_METRICS_PORT": str(port)}),
    ):
        deadline = time.monotonic() + 5
        while admin.execute("SELECT count(*) FROM watchdog.notify_queue_looks").fetchone() == (0,):
            assert time.monotonic() < deadline, "the watchdog's looks keep no state of their own"
            time.sleep(0.05)
        superuser.execute("BEGIN")
        superuser.execute("SELECT 1 FROM watchdog.notify_queue_looks FOR UPDATE")
        holder.execute("LISTEN q")
        holder.execute("BEGIN")
        holder.execute("SELECT 1")
        held = holder.info.backend_pid
        while _queue_bytes(admin) <= 2 * bound_bytes:
            notifier.execute(_SEND)
        time.sleep(1.2)  # ~5 looks
        still_there = _there(admin, held)
        counted = _metric(port, "tokenvault_lock_watchdog_notify_queue_state_not_taken_total")
        superuser.execute("COMMIT")
        deadline = time.monotonic() + 3
        while _there(admin, held) and time.monotonic() < deadline:
            notifier.execute(_SEND)
            time.sleep(0.05)
        ended = not _there(admin, held)
    said = [line for line in _lines(log_file) if _NOT_TAKEN in str(line.get("message"))]
    print(
        f"NOTIFY-STATE-NOT-TAKEN: H kept {still_there}, looks counted {counted}, ERROR lines {len(said)},"
        f" then ended {ended}"
    )
    assert still_there
    assert counted >= 3, counted
    assert [line["level"] for line in said] == ["ERROR"], said
    assert ended
