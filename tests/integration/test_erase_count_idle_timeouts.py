"""`tokenvault erase`'s count keeps no idle timeout an analyst set on the shared login (review 37, R37-1).

Attack 35, N8 pinned the count's statement and lock timeouts (an analyst's `ALTER ROLE CURRENT_USER SET
statement_timeout = 1` refused every erasure), but not the idle ones, which any login may set for itself too. The
count's session is idle between its connection and its BEGIN, then in its transaction between BEGIN and the count,
for a network round trip each: with the database one hop away, `idle_session_timeout = 1` or
`idle_in_transaction_session_timeout = 1` ended the session before it counted, and the officer's every erasure was
refused. Real PostgreSQL (a cluster of the test's own, migrated, the stack's analyst login) behind a TCP proxy that
holds each chunk 2 ms (the network).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.integration.own_cluster import cluster_of_its_own
from tokenvault_cli.erase_reach import count_reach

HOP_SECONDS = 0.002
"""What the proxy holds each chunk for, each way: a database 2 ms away."""
TOKEN = "ip_R37idleTimeoutsToken0"


def _pump(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            time.sleep(HOP_SECONDS)
            target.sendall(data)
    for end in (source, target):
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def _one_hop_away(dsn: str) -> Iterator[str]:
    """`dsn` through a proxy on 127.0.0.1 that holds each chunk HOP_SECONDS (the server as the DSN reaches it)."""
    params = conninfo_to_dict(dsn)
    upstream = (str(params.get("host") or "127.0.0.1"), int(str(params.get("port") or 5432)))
    listener = socket.create_server(("127.0.0.1", 0))
    opened: list[socket.socket] = [listener]

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                server = socket.create_connection(upstream) if not upstream[0].startswith("/") else _unix(upstream)
                opened.extend((client, server))
                for a, b in ((client, server), (server, client)):
                    threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield make_conninfo(dsn, host="127.0.0.1", port=listener.getsockname()[1], hostaddr="127.0.0.1")
    finally:
        for sock in opened:
            sock.close()


def _unix(upstream: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(f"{upstream[0]}/.s.PGSQL.{upstream[1]}")
    return sock


@pytest.mark.timeout(60)
def test_an_analysts_idle_timeout_defaults_do_not_stop_the_officers_count(tmp_path: Path) -> None:
    started = time.monotonic()
    with cluster_of_its_own(tmp_path / "pg") as pg, psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        admin.execute(
            "INSERT INTO public.user_logins (user_id, masked_ip, event_id) VALUES (%s, %s, 'r37-1'), (%s, %s, 'r37-2')",
            ("r37-person", TOKEN, "r37-other", TOKEN),
        )
        analyst = conninfo_to_dict(pg.analyst_dsn)["user"]
        outcomes = {}
        with _one_hop_away(pg.analyst_dsn) as far:
            for default in ("idle_session_timeout = 1", "idle_in_transaction_session_timeout = 1"):
                with psycopg.connect(pg.analyst_dsn, autocommit=True) as own:  # one analyst, once: the shared login's
                    own.execute(f"ALTER ROLE CURRENT_USER SET {default}".encode())
                try:
                    with pytest.raises(psycopg.Error), psycopg.connect(far) as plain:
                        plain.execute("SELECT count(*) FROM public.user_logins").fetchone()  # the default bites
                    reach = count_reach(far, [TOKEN], ["r37-person"])
                    outcomes[default] = (reach.other_people, reach.other_rows, reach.held[TOKEN].their_rows)
                finally:
                    admin.execute(f'ALTER ROLE "{analyst}" RESET ALL'.encode())
    print(f"\nR37-1 idle-timeout defaults, the count 2 ms away: {outcomes}; {time.monotonic() - started:.1f} s")
    assert outcomes == {
        "idle_session_timeout = 1": (1, 1, 1),
        "idle_in_transaction_session_timeout = 1": (1, 1, 1),
    }, outcomes
