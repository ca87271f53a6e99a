"""A vault login's listener that renews its transaction in one message is a candidate of the NOTIFY rule (0065).

Attack 36, L1: a backend reads its notifications - and so moves its queue position - only when idle outside a
transaction. A listener of a member login of tokenvault_vault sending `COMMIT; BEGIN; SELECT 1` as ONE simple-query
message every ~20 ms is never idle outside one, so it holds the queue's tail, while its xact_start is never over
~20 ms old: 0063/0064 (a vault transaction is a candidate only once begun before the previous look and 0.2 s ago)
never ended it - the queue reached the tester's 96 MB cap in 2.4-2.7 s. 0065 judges a vault session by how long it
has been seen busy (not 'idle') at every look. Review 37, R37-2: a request session busy back to back since before
the listener has the longer busy run; 0066 samples the vault's busy sessions before ending one and skips one seen
waiting for its client outside a transaction (which a listener holding the tail never is). The real watchdog on a
cluster of the test's own, logins made as Vault makes them; the notifier stops at RELAY_CAP_BYTES whatever happens.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
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


def _loop(stop: threading.Event, step: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        while not stop.is_set():
            with contextlib.suppress(psycopg.Error):
                step()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _listener_against_a_request_session(
    pg: Postgres, tmp_path: Path, *, pause: float, every: int = 1, renewing_after: float | None
) -> tuple[dict[str, int], list[int], bool, set[int]]:
    """Pod A's login: H LISTENs and renews its transaction in one message every ~20 ms (never idle outside one),
    from the start (`renewing_after` None: LISTEN; BEGIN first) or from `renewing_after` s after the watchdog's start
    (reading its notifications until then). Pod B's login: R serves short requests (a transaction of two statements)
    with `pause` s between two. A notifier of pod A's fills the queue until H is ended (or the cap). Returns the pids,
    the sessions the watchdog ended in order, whether R is still there and the rule's busy rows at the end."""
    bound_bytes = NOTIFY_QUEUE_BOUND * QUEUE_MAX_BYTES
    log_file = tmp_path / "lock_watchdog.log"
    stop, go = threading.Event(), threading.Event()
    with contextlib.ExitStack() as stack:
        admin = stack.enter_context(psycopg.connect(pg.admin_dsn, autocommit=True))
        pods = {pod: stack.enter_context(member_login(pg.admin_dsn, "tokenvault_vault", 8)) for pod in "ab"}

        def conn(pod: str) -> psycopg.Connection:
            return stack.enter_context(contextlib.closing(psycopg.connect(pods[pod], autocommit=True)))

        holder, notifier, requests = conn("a"), conn("a"), conn("b")
        holder.execute("LISTEN q")
        if renewing_after is None:
            holder.execute("BEGIN")
            holder.execute("SELECT 1")
            go.set()
        counts = {"renewals": 0, "requests": 0}

        def renew() -> None:
            go.wait()
            holder.execute("COMMIT; BEGIN; SELECT 1")  # one message: never idle outside a transaction
            counts["renewals"] += 1
            time.sleep(0.02)

        def serve() -> None:
            with requests.transaction():
                requests.execute("SELECT pg_sleep(0.001)")
                requests.execute("SELECT 1")  # 'idle in transaction' between the two, as the vault's requests
            counts["requests"] += 1
            if pause and counts["requests"] % every == 0:
                time.sleep(pause)

        stack.callback(stop.set)
        for step in (renew, serve):
            stack.callback(_loop(stop, step).join, 5)
        pids = {"H": holder.info.backend_pid, "R": requests.info.backend_pid, "N": notifier.info.backend_pid}
        stack.enter_context(watchdog(pg, log_file))
        if renewing_after is not None:
            time.sleep(renewing_after)  # R seen busy at every look meanwhile; H idle in its LISTEN
            go.set()
        time.sleep(0.5)  # H's first looks
        peak, started, ended_after = 0.0, time.monotonic(), None
        while peak < RELAY_CAP_BYTES and time.monotonic() - started < 6:
            notifier.execute(_SEND)
            peak = max(peak, _queue_bytes(admin))
            if not _there(admin, pids["H"]):
                ended_after = time.monotonic() - started
                break
            time.sleep(0.02)  # ~30 MB/s
        for _ in range(3):  # the tail moves when a notifier next writes a page
            notifier.execute(_SEND)
        after = _queue_bytes(admin)
        time.sleep(0.5)  # looks more, R still serving
        stop.set()
        r_there = _there(admin, pids["R"])
        # the rule's busy rows: the watchdog's currently busy vault sessions only - H's went with H
        busy = {pid for (pid,) in admin.execute("SELECT pid FROM watchdog.notify_queue_busy").fetchall()}
    ends = [int(str(line["pid"])) for line in _lines(log_file) if _ENDED in str(line.get("message"))]
    named = {pid: name for name, pid in pids.items()}
    print(
        f"NOTIFY-RENEWING: H ({counts['renewals']} renewals) ended {ended_after} s into the sends, queue peak"
        f" {peak / 2**20:.1f} MB (bound {bound_bytes / 2**20:.1f} MB), after {after / 2**20:.1f} MB; R served"
        f" {counts['requests']} requests, there {r_there}; busy rows {sorted(str(named.get(p, p)) for p in busy)};"
        f" ends {[named.get(pid, pid) for pid in ends]}"
    )
    assert ended_after is not None, f"the renewing listener was not ended (queue {peak / 2**20:.0f} MB)"
    assert after < bound_bytes, after
    return pids, ends, r_there, busy


@pytest.mark.timeout(60)
def test_a_renewing_vault_listener_is_ended_and_a_busy_request_session_is_not(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """R serves with ~3 ms idle between two requests (a pool connection under load); H renews from the start. The
    watchdog ends H, the queue is cut under the bound, R is never ended, H's busy row goes with it. Before 0065 H was
    never a candidate and the queue reached the cap."""
    pids, ends, r_there, busy = _listener_against_a_request_session(
        private_postgres, tmp_path, pause=0.003, renewing_after=None
    )
    assert r_there, "the session serving short requests was ended"
    assert ends == [pids["H"]], ends
    assert pids["H"] not in busy and busy <= {pids["R"], pids["N"]}, busy


@pytest.mark.timeout(60)
def test_a_request_session_serving_back_to_back_since_before_the_listener_is_not_ended_first(
    private_postgres: Postgres, tmp_path: Path
) -> None:
    """Review 37, R37-2: R serves back to back (a saturated pool: idle between two requests for microseconds, and
    for 0.1 ms once every 8 requests, ~10 ms; the looks 0.2 s apart rarely see it idle), from before H begins renewing
    (0.6 s after the watchdog's start), so R's busy run is the longer: on 0065 the watchdog ended R first, then H
    (5 of 5). 0066 samples the vault's busy sessions for up to 0.1 s before ending one and skips one seen waiting for
    its client outside a transaction: H (which never is) is the first and only session ended, R kept."""
    pids, ends, r_there, _ = _listener_against_a_request_session(
        private_postgres, tmp_path, pause=0.0001, every=8, renewing_after=0.6
    )
    assert ends == [pids["H"]], ends
    assert r_there, "the session serving requests back to back was ended"
