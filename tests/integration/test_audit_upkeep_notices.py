"""A huge NOTICE the database owner raises on the upkeep's segment read never reaches the vault's process.

Retest 17, finding A (HIGH): a row-level-security policy of the owner's on vault.audit_log ran a
function that raised a NOTICE of 200-320 MB on the upkeep's segment read. libpq reads a message
whole and copies it into a result: the vault's peak memory went from 90 to 705 MB (200 MB), past
the shipped 1 GiB limit (320 MB), so the replica was OOM-killed between a reveal and its
checkpoint's export, and the owner rewrote the reveal's row unnoticed. The vault's sessions now
run with `client_min_messages = error`: the server never sends the notice. (Since attack 46 the upkeep's
sessions run with `row_security = off`, so its read fails on such a policy instead; the report commands' sessions
(`audit verify`, `who-saw`) still read past a policy to name it: the read is made with their settings.)

Real PostgreSQL; the round's read runs in a process of its own, whose peak RSS (VmHWM) is measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg

from tests.integration.own_database import database_of_its_own

NOTICE_MB = 48
"""The notice's size: before the fix the reading process grew by about 3.5 times this."""
GROWTH_ALLOWED_KB = 16 * 1024
"""How much the reading process's peak RSS may grow over the read (a page of rows, nothing near the notice)."""

_PLANT = f"""
CREATE TABLE public.notices_raised (at timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION public.raise_a_huge_notice() RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER AS $f$
BEGIN
  IF current_query() LIKE 'WITH page AS MATERIALIZED%' THEN
    INSERT INTO public.notices_raised DEFAULT VALUES;
    RAISE NOTICE '%', repeat('x', {NOTICE_MB * 1024 * 1024});
  END IF;
  RETURN true;
END $f$;
GRANT EXECUTE ON FUNCTION public.raise_a_huge_notice() TO PUBLIC;
CREATE POLICY huge_notice ON vault.audit_log USING (public.raise_a_huge_notice());
ALTER TABLE vault.audit_log ENABLE ROW LEVEL SECURITY;
"""
"""The owner's policy: its function raises one notice of NOTICE_MB per row the segment read looks at."""

_ROUND_READ = """
import json, sys
from tests.integration.own_audit_log import reveal_event
from vault_service.adapters.postgres import PostgresAuditLog
from vault_service.adapters.postgres.session_settings import session_settings_with
from vault_service.bootstrap import open_vault_pool

def peak_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1])
    raise SystemExit("no VmHWM")

pool = open_vault_pool(sys.argv[1], 2, session_settings_with("on", report=True))  # reads past a policy
log = PostgresAuditLog(pool)
log.upkeep_statement_timeout = 60.0  # as the service sets it: each upkeep transaction bounded
log.append(reveal_event(1))
head = log.head()
assert head is not None
log.segment(0, head, [], 100)  # warm: imports, prepared types, the first page read (the notice not yet planted)
before = peak_kb()
sys.stdout.write("planted?\\n"); sys.stdout.flush()
sys.stdin.readline()
rows = log.segment(0, head, [], 100)  # the round's read, the owner's policy in place
print(json.dumps({"rows": len(rows), "before_kb": before, "after_kb": peak_kb()}))
pool.close()
"""
"""The upkeep's statements as the service runs them (its pool, its audit log adapter), in a process of its own,
with the report sessions' settings (no `row_security = off`)."""


def test_a_huge_notice_on_the_upkeeps_segment_read_never_reaches_the_vault(stack_env: dict[str, str]) -> None:
    with database_of_its_own(stack_env, "notice", migrated=True) as env:
        reader = subprocess.Popen(
            [sys.executable, "-c", _ROUND_READ, env["PG_VAULT_DSN"]],
            cwd=Path(__file__).resolve().parents[2],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert reader.stdin is not None and reader.stdout is not None
        try:
            assert reader.stdout.readline().strip() == "planted?"
            with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as owner:
                owner.execute(_PLANT)
                reader.stdin.write("\n")
                reader.stdin.flush()
                measured = json.loads(reader.stdout.readline())
                assert reader.wait(timeout=60) == 0
                raised = owner.execute("SELECT count(*) FROM public.notices_raised").fetchone()
        finally:
            if reader.poll() is None:
                reader.kill()
    assert raised is not None and raised[0] >= 1, "the owner's function never raised its notice"
    assert measured["rows"] == 1
    growth = measured["after_kb"] - measured["before_kb"]
    assert growth < GROWTH_ALLOWED_KB, f"the read's peak RSS grew by {growth} kB: the notice reached the process"
