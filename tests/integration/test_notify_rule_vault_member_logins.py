"""One pod's member login of tokenvault_vault cannot have the NOTIFY rule end another pod's key job (migration 0063).

Attack 33, A5: Kubernetes' Vault makes one login per pod IN ROLE tokenvault_vault, and PostgreSQL refuses pod A's login
`pg_terminate_backend` of pod B's sessions. But 0056-0062's rule put every member login in one category, oldest
transaction first: pod A's listener holding the queue's tail got the watchdog to end pod B's key-job hold (older than
the listener) first, and a listener of pod A's begun after the crossing was never a candidate. The real watchdog, on a
cluster of the test's own, with logins made as Vault makes them; the notifier stops at CAP_BYTES whatever happens.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from devstack.postgres import Postgres
from tests.integration.member_logins import member_login
from tests.integration.test_lock_watchdog import _lines, private_postgres, watchdog
from tests.integration.test_notify_queue_watchdog import (
    _SEND,
    QUEUE_MAX_BYTES,
    RELAY_CAP_BYTES,
    _Drain,
    _queue_bytes,
    _there,
)
from vault_service.adapters.postgres.key_job_liveness import JOB_LOCK_CLASS
from vault_service.adapters.postgres.notify_queue import NOTIFY_QUEUE_BOUND

__all__ = ["private_postgres"]  # the fixture, used by name

_ENDED = "while the NOTIFY queue grows past its bound"
_ADVISORY = sql.SQL("pg_catalog.pg_advisory_xact_lock_shared(integer, integer)")
"""The function 0045 revokes where it can; a managed PostgreSQL's migrator cannot (here granted to pod A's login)."""
_HELD = (
    "SELECT count(*) FROM pg_locks WHERE pid = %s AND granted AND locktype = 'advisory' AND classid = %s"
    " AND objsubid = 2"
)


def _key_job_held(admin: psycopg.Connection, pid: int) -> bool:
    return admin.execute(_HELD, (pid, JOB_LOCK_CLASS)).fetchone() == (1,)


def _ends(log_file: Path) -> list[tuple[int, float]]:
    """(pid, the queue's usage in bytes) of each session the watchdog ended as a holder of the queue's tail."""
    return [
        (int(str(line["pid"])), float(str(line["usage"])) * QUEUE_MAX_BYTES)
        for line in _lines(log_file)
        if _ENDED in str(line.get("message"))
    ]


@pytest.mark.timeout(60)
def test_pod_as_listeners_are_ended_and_pod_bs_key_job_kept_a_relay_begun_after_the_crossing_too(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Pod B holds a key job (`vault.hold_key_job`, its transaction older than everything of pod A's). Pod A's login:
    may not end it itself, may not take a key job's or the key-generation lock in a session that LISTENs (0063: so a
    listener cannot be spared as a key job is); H (LISTEN; BEGIN) holds the tail, D (a younger transaction) is a
    decoy, L listens and reads. The queue passes the bound: the watchdog ends D (the youngest vault transaction that
    holds no key lock), and with no growth nothing more. Then L begins holding (after the crossing), a fast notifier
    sends: H and L are both ended, the queue is cut, and pod B's hold is never ended - the same transaction, its lock
    still held. Before 0063 pod B's hold was ended first (0.93-1.0 s in the tester's runs) and L never."""
    pg = private_postgres
    bound_bytes = NOTIFY_QUEUE_BOUND * QUEUE_MAX_BYTES
    log_file = tmp_path / "lock_watchdog.log"
    with contextlib.ExitStack() as stack:
        admin = stack.enter_context(psycopg.connect(pg.admin_dsn, autocommit=True))
        pods = {pod: stack.enter_context(member_login(pg.admin_dsn, "tokenvault_vault", 16)) for pod in "ab"}

        def conn(pod: str) -> psycopg.Connection:
            return stack.enter_context(contextlib.closing(psycopg.connect(pods[pod], autocommit=True)))

        key_job = conn("b")
        key_job.execute("BEGIN")
        key_job.execute("SELECT vault.hold_key_job(1)")
        xid = key_job.execute("SELECT txid_current()").fetchone()
        job_pid = key_job.info.backend_pid
        holder, decoy, relay, notifier = conn("a"), conn("a"), conn("a"), conn("a")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            notifier.execute("SELECT pg_terminate_backend(%s)", (job_pid,))
        holder.execute("LISTEN q")
        for taken in ("vault.hold_key_job(2)", "vault.try_claim_key_job(2)", "vault.lock_key_generation_shared()"):
            holder.execute("BEGIN")
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
                holder.execute(sql.SQL("SELECT {}").format(sql.SQL(taken)))
            holder.execute("ROLLBACK")
        holder.execute("BEGIN")
        holder.execute("SELECT 1")  # holds the tail from here
        decoy.execute("BEGIN")
        decoy.execute("SELECT 1")
        relay.execute("LISTEN q")
        drain = _Drain(relay)
        pids = {"H": holder.info.backend_pid, "D": decoy.info.backend_pid, "L": relay.info.backend_pid}
        stack.enter_context(watchdog(pg, log_file))
        time.sleep(0.5)  # its first looks
        while _queue_bytes(admin) <= 1.3 * bound_bytes:
            notifier.execute(_SEND)
        deadline = time.monotonic() + 3
        while _there(admin, pids["D"]) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # no growth: nothing more
        first = (_there(admin, pids["D"]), _there(admin, pids["H"]), _there(admin, job_pid))
        drain.close()
        relay.execute("BEGIN")
        relay.execute("SELECT 1")  # L holds from here: after the crossing
        peak, started, both_after = 0.0, time.monotonic(), None
        while peak < RELAY_CAP_BYTES and time.monotonic() - started < 6:
            notifier.execute(_SEND)
            peak = max(peak, _queue_bytes(admin))
            if not (_there(admin, pids["H"]) or _there(admin, pids["L"])):
                both_after = time.monotonic() - started
                break
            time.sleep(0.02)  # ~30 MB/s
        for _ in range(3):  # the tail moves when a notifier next writes a page
            notifier.execute(_SEND)
        after = _queue_bytes(admin)
        time.sleep(0.3)  # a look more
        job_kept = _there(admin, job_pid) and _key_job_held(admin, job_pid)
        same = job_kept and key_job.execute("SELECT txid_current()").fetchone() == xid
    ends = [pid for pid, _ in _ends(log_file)]
    named = {pid: name for name, pid in pids.items()} | {job_pid: "pod B's key job"}
    print(
        f"NOTIFY-POD-A: first look's end: D gone {not first[0]}, H there {first[1]}; H and L gone {both_after} s into"
        f" the fast sends, queue peak {peak / 2**20:.1f} MB (bound {bound_bytes / 2**20:.1f} MB), after"
        f" {after / 2**20:.1f} MB; ends {[named.get(pid, pid) for pid in ends]}; pod B's hold kept {job_kept}"
    )
    assert first == (False, True, True), first
    assert job_kept and same, "pod B's key-job hold was ended (before 0063: first, 0.93-1.0 s)"
    assert both_after is not None, f"pod A's listeners were not both ended (queue {peak / 2**20:.0f} MB)"
    assert after < bound_bytes, after
    assert ends[0] == pids["D"] and sorted(ends[1:]) == sorted([pids["H"], pids["L"]]), ends


@pytest.mark.timeout(60)
def test_a_listener_holding_a_key_jobs_lock_around_the_vaults_functions_is_spared_only_to_the_owners_mark(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Where 0045 could only warn (a managed PostgreSQL: a login may still run pg_catalog's advisory functions - here
    granted to pod A's login), pod A's listener takes a key job's lock directly and is spared like pod B's real hold -
    but only while the queue is under watchdog.rule_bounds' notify_queue_spared_until (set to 4 bounds here): past
    it, it is ended; pod B's hold (its login has no such function) never is. Before 0063 pod B's hold (older) went
    first."""
    pg = private_postgres
    bound_bytes = NOTIFY_QUEUE_BOUND * QUEUE_MAX_BYTES
    spared_until = 4 * NOTIFY_QUEUE_BOUND
    log_file = tmp_path / "lock_watchdog.log"
    with contextlib.ExitStack() as stack:
        admin = stack.enter_context(psycopg.connect(pg.admin_dsn, autocommit=True))
        pods = {pod: stack.enter_context(member_login(pg.admin_dsn, "tokenvault_vault", 16)) for pod in "ab"}
        pod_a = psycopg.conninfo.conninfo_to_dict(pods["a"])["user"]
        login = sql.Identifier(str(pod_a))
        admin.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(_ADVISORY, login))
        stack.callback(admin.execute, sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM {}").format(_ADVISORY, login))
        with admin.transaction():
            admin.execute("SET LOCAL ROLE tokenvault_owner")
            admin.execute("UPDATE watchdog.rule_bounds SET notify_queue_spared_until = %s", (spared_until,))

        def conn(pod: str) -> psycopg.Connection:
            return stack.enter_context(contextlib.closing(psycopg.connect(pods[pod], autocommit=True)))

        key_job = conn("b")
        key_job.execute("BEGIN")
        key_job.execute("SELECT vault.hold_key_job(1)")
        job_pid = key_job.info.backend_pid
        holder, notifier = conn("a"), conn("a")
        holder.execute("LISTEN q")
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock_shared(%s, 7)", (JOB_LOCK_CLASS,))
        held = holder.info.backend_pid
        stack.enter_context(watchdog(pg, log_file))
        time.sleep(0.5)  # its first looks
        peak, started, ended_after = 0.0, time.monotonic(), None
        while peak < RELAY_CAP_BYTES and time.monotonic() - started < 6:
            notifier.execute(_SEND)
            peak = max(peak, _queue_bytes(admin))
            if not _there(admin, held):
                ended_after = time.monotonic() - started
                break
            time.sleep(0.02)  # ~30 MB/s
        for _ in range(3):
            notifier.execute(_SEND)
        after = _queue_bytes(admin)
        time.sleep(0.3)
        job_kept = _there(admin, job_pid) and _key_job_held(admin, job_pid)
    ends = _ends(log_file)
    print(
        f"NOTIFY-SPARED-UNTIL: pod A's listener with a key job's lock ended {ended_after} s into the sends at"
        f" {[round(usage / 2**20, 1) for _, usage in ends]} MB (mark {spared_until * QUEUE_MAX_BYTES / 2**20:.1f} MB),"
        f" peak {peak / 2**20:.1f} MB, after {after / 2**20:.1f} MB; pod B's hold kept {job_kept}"
    )
    assert job_kept, "pod B's key-job hold was ended"
    assert ended_after is not None, f"the listener was not ended (queue {peak / 2**20:.0f} MB)"
    assert [pid for pid, _ in ends] == [held], ends
    assert ends[0][1] > spared_until * QUEUE_MAX_BYTES, ends  # spared until then
    assert after < bound_bytes, after
