"""walk48, W48-12: `audit login-rows` after a rotation of the row-signing key says it once per signed list.

The runbook (docs/key-rotation.md, step 8) in reverse - rotate `tokenvault-login-rows`, load, then `audit login-rows`
before the keys file is refreshed - printed one block per row loaded since ("key version v3 not in the keys file",
the same list, the same time): 30 blocks for 30 events, thousands for a real rotation. Now one line per signed list,
"N rows signed with key version vK, not in the keys file", with no event id; the refresh advice once under the
counts; the exit status unchanged (0: such rows are a stale file, not tampering).
Real SQS, the stack's ETL, OpenBao and PostgreSQL; the `tokenvault` console script.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from pathlib import Path

import hvac
import psycopg
import pytest

from devstack.openbao import write_login_row_keys
from tests.cli.conftest import CliStack
from tests.cli.erase_logins import load, people, tokens_of
from tokenvault_common.login_row_signatures import LOGIN_ROWS_KEY

ROWS = 6

pytestmark = pytest.mark.usefixtures("loaded_rows_removed")


def _rows_by_list(stack: CliStack, person: str) -> dict[str, list[str]]:
    """The person's rows' event ids by the signed list they name."""
    with psycopg.connect(stack.env["PG_ADMIN_DSN"]) as conn:
        found = conn.execute("SELECT row_manifest, event_id FROM user_logins WHERE user_id = %s", (person,)).fetchall()
    lists: dict[str, list[str]] = {}
    for manifest, event_id in found:
        lists.setdefault(str(manifest), []).append(str(event_id))
    return lists


def test_w48_12_rows_signed_after_a_rotation_are_one_line_per_signed_list(cli_stack: CliStack) -> None:
    started = time.monotonic()
    env = cli_stack.env
    keys_file = Path(env["LOGIN_ROW_KEYS_FILE"])
    security = hvac.Client(url=env["VAULT_ADDR"], token=Path(env["VAULT_SECURITY_TOKEN_FILE"]).read_text().strip())
    tag = uuid.uuid4().hex
    ip, dev = people(tag)
    person = f"w4812-{tag[:8]}"
    try:
        version = len(json.loads(keys_file.read_text())["keys"]) + 1
        security.adapter.post(f"/v1/transit/keys/{LOGIN_ROWS_KEY}/rotate")  # the team's routine rotation
        for _ in range(2):  # two loads of three logins (two signed lists, or more), the same ip and device
            load(cli_stack, [(person, ip, dev)] * (ROWS // 2))
        lists = _rows_by_list(cli_stack, person)
        ip_token, _ = tokens_of(cli_stack, person)

        done = cli_stack.as_("security", "audit", "login-rows", "--token", ip_token, "-o", "csv")
        assert done.returncode == 0, done.stdout + done.stderr  # a stale file, not tampering: exit unchanged
        found = list(csv.reader(io.StringIO(done.stdout)))
        assert found[0] == ["event_id", "row_manifest", "finding", "list_signed_at"], done.stdout
        said = {
            manifest: f"{len(ids)} row{'s' if len(ids) > 1 else ''} signed with key version v{version},"
            " not in the keys file"
            for manifest, ids in lists.items()
        }
        print(f"W48-12: {ROWS} rows in {len(lists)} list(s): {done.stdout}{done.stderr}")
        assert sorted((m, f) for e, m, f, _ in found[1:] if not e) == sorted(said.items()), done.stdout
        assert len(found) == 1 + len(lists), done.stdout  # one line per list, none per row
        assert not [e for ids in lists.values() for e in ids if e in done.stdout], done.stdout
        assert f"signed by a key version the keys file lacks: {ROWS};" in done.stderr, done.stderr
        assert done.stderr.count("refresh the keys file, then check again") == 1, done.stderr

        # An 80-column terminal's blocks: one per list, not one per row (the walk's 30 blocks).
        narrow = cli_stack.run(
            "--stack", str(cli_stack.state_dir), "--as", "security",
            "audit", "login-rows", "--token", ip_token, env={"COLUMNS": "80"},
        )  # fmt: skip
        assert narrow.returncode == 0, narrow.stdout + narrow.stderr
        assert narrow.stdout.count(" not in the keys file") == len(lists), narrow.stdout
        assert not [e for ids in lists.values() for e in ids if e in narrow.stdout], narrow.stdout
        assert ip not in done.stdout + done.stderr + narrow.stdout + narrow.stderr
    finally:  # whatever happened, the stack's file holds every version for the tests after this one
        root = Path(env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip()
        write_login_row_keys(hvac.Client(url=env["VAULT_ADDR"], token=root), keys_file)

    # Refreshed: the same rows verify, nothing said about them.
    done = cli_stack.as_("security", "audit", "login-rows", "--token", ip_token, "-o", "csv")
    assert done.returncode == 0 and done.stdout.splitlines()[1:] == [], done.stdout + done.stderr
    assert f"verify: {ROWS};" in done.stderr and "refresh the keys file" not in done.stderr, done.stderr
    print(f"\nW48-12 login-rows after a rotation; {time.monotonic() - started:.1f} s")
