"""After a rotation of the ETL's row-signing key, rows it signs with the new version are not reported as tampered with.

walk46, W46-2: the security team rotated `tokenvault-login-rows` (routine), the ETL signed new rows `vault:v2:`, and
the officer's `erase` / the investigator's `reveal --query --verify-rows` of them said "do not verify against the
ETL's signature ... report it to the security team": the public keys file held only v1 and nothing rewrote it.
Now such rows are named as signed by a version the file lacks (exit 2, nothing erased or revealed) with the command
that refreshes the file, `tokenvault --stack DIR --as security login-row-keys refresh` (the team's Vault token),
after which they verify. Also W46-5 (`--login-row-keys` after the subcommand) and W46-7 (messages).
Real SQS, the stack's ETL, the vault service, OpenBao and PostgreSQL; the `tokenvault` console script.
"""

from __future__ import annotations

import json
import stat
import time
import uuid
from pathlib import Path

import hvac
import psycopg
import pytest

from devstack.openbao import write_login_row_keys
from tests.cli.conftest import CliStack
from tests.cli.erase_logins import erase, load, people, revealed, tokens_of
from tokenvault_common.login_row_signatures import LOGIN_ROWS_KEY

TAMPERING = "do not verify against the ETL's signature"


pytestmark = pytest.mark.usefixtures("loaded_rows_removed")


def _investigate(stack: CliStack, person: str, *before: str) -> tuple[int, str, str]:
    query = f"SELECT masked_ip, masked_device_id FROM user_logins WHERE user_id = '{person}'"
    done = stack.run(
        "--stack", str(stack.state_dir), "--as", "fraud-investigator", *before,
        "reveal", "--query", query, "--verify-rows", "--purpose", "INC-W46-2", "-o", "csv",
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def _signature_of(stack: CliStack, person: str) -> str:
    with psycopg.connect(stack.env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT m.signature FROM user_logins l JOIN user_login_manifests m ON m.manifest_id = l.row_manifest"
            " WHERE l.user_id = %s",
            (person,),
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_w46_2_rows_signed_after_a_rotation_ask_for_the_keys_file_refreshed_then_erase(cli_stack: CliStack) -> None:
    started = time.monotonic()
    env = cli_stack.env
    keys_file = Path(env["LOGIN_ROW_KEYS_FILE"])
    security = hvac.Client(url=env["VAULT_ADDR"], token=Path(env["VAULT_SECURITY_TOKEN_FILE"]).read_text().strip())
    tag_a, tag_b = uuid.uuid4().hex, uuid.uuid4().hex
    (ip_a, dev_a), (ip_b, dev_b) = people(tag_a), people(tag_b)
    person_a, person_b = f"w462-a-{tag_a[:8]}", f"w462-b-{tag_b[:8]}"
    try:
        load(cli_stack, [(person_a, ip_a, dev_a)])
        before = json.loads(keys_file.read_text())["keys"]
        security.adapter.post(f"/v1/transit/keys/{LOGIN_ROWS_KEY}/rotate")  # the team's routine rotation
        load(cli_stack, [(person_b, ip_b, dev_b)])
        version = len(before) + 1
        assert _signature_of(cli_stack, person_b).startswith(f"vault:v{version}:")
        tokens_b = tokens_of(cli_stack, person_b)

        code, out, err = erase(cli_stack, *tokens_b, "--user-id", person_b)
        assert code == 2, out + err
        assert TAMPERING not in err, err  # not the tampering alarm
        assert f"1 row(s) of user_logins holding these tokens are signed with key version v{version}" in err, err
        assert f"which the public keys file {keys_file} lacks (it holds v1" in err and "erasing nothing" in err, err
        refresh = f"tokenvault --stack {cli_stack.state_dir} --as security login-row-keys refresh"
        assert f"Have the security team refresh the file - `{refresh}` - then run this erase again" in err, err  # W47-5
        assert person_b not in err and not [t for t in tokens_b if t in err + out], err
        code, out, err = _investigate(cli_stack, person_b)
        assert code == 2 and f"signed with key version v{version}" in err and "revealing nothing" in err, out + err
        assert "then run this reveal again" in err, err
        assert TAMPERING not in err and ip_b not in out + err, out + err
        assert revealed(cli_stack, tokens_b) == [ip_b, dev_b]  # nothing erased

        done = cli_stack.run(*refresh.split()[1:])  # the command the message gives, as given
        assert done.returncode == 0, done.stdout + done.stderr
        assert "key versions v1, " in done.stdout and f"v{version} of {LOGIN_ROWS_KEY}" in done.stdout, done.stdout
        assert stat.S_IMODE(keys_file.stat().st_mode) == 0o644
        assert sorted(json.loads(keys_file.read_text())["keys"]) == [str(v) for v in range(1, version + 1)]
        assert not [p for p in keys_file.parent.iterdir() if p.name.startswith(f".{keys_file.name}.")]

        code, out, err = _investigate(cli_stack, person_a)  # v1's rows still verify
        assert code == 0 and f"{ip_a},{dev_a}" in out, out + err
        code, out, err = erase(cli_stack, *tokens_b, "--user-id", person_b)
        assert code == 0 and out.count("erased") == 2, out + err
        assert revealed(cli_stack, tokens_b) == ["NOT_FOUND", "NOT_FOUND"]
    finally:  # whatever happened, the stack's file holds every version for the tests after this one
        write_login_row_keys(hvac.Client(url=env["VAULT_ADDR"], token=_root(env)), keys_file)
    print(f"\nW46-2 rotation: stale file named, refreshed, erased; {time.monotonic() - started:.1f} s")


def _root(env: dict[str, str]) -> str:
    return Path(env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip()


def test_w46_5_login_row_keys_after_the_subcommand_says_where_it_goes(cli_stack: CliStack) -> None:
    done = cli_stack.as_("privacy-officer", "erase", "ip_x", "--purpose", "GDPR-1", "--login-row-keys", "/x.json")
    assert done.returncode == 2, done.stderr
    assert "--login-row-keys is an option of tokenvault itself, given before the subcommand" in done.stderr
    assert "tokenvault --login-row-keys ... erase ..." in done.stderr, done.stderr
    done = cli_stack.as_("analyst", "reveal", "--dsn", "host=x", "--purpose", "P", "--query", "SELECT 1")
    assert done.returncode == 2 and "--dsn is an option of tokenvault itself" in done.stderr, done.stderr


def test_w46_7_keys_file_messages(cli_stack: CliStack, tmp_path: Path) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex
    ip, dev = people(tag)
    person = f"w467-{tag[:8]}"
    load(cli_stack, [(person, ip, dev)])
    tokens = tokens_of(cli_stack, person)
    missing = tmp_path / "absent.json"
    # A missing file is said to be missing, not refused for "another local account" (there is none).
    done = cli_stack.run(
        "--stack", str(cli_stack.state_dir), "--as", "privacy-officer", "--login-row-keys", str(missing),
        "erase", *tokens, "--user-id", person, "--purpose", "GDPR-W46-7", "--yes",
    )  # fmt: skip
    assert done.returncode == 2 and f"the public keys file {missing} does not exist" in done.stderr, done.stderr
    assert "another local account" not in done.stderr and "`erase` counts in user_logins" in done.stderr
    # reveal's refusal carries reveal's explanation, not erase's.
    code, _, err = _investigate(cli_stack, person, "--login-row-keys", str(missing))
    assert code == 2 and "does not exist" in err and "`erase` counts" not in err, err
    assert "`reveal --verify-rows` verifies the rows of user_logins" in err, err
    # A stack started before row signing (its stack.env names no keys file): told so, not "use --stack .stack".
    older = tmp_path / "older"
    older.mkdir(mode=0o700)
    lines = (cli_stack.state_dir / "stack.env").read_text().splitlines(keepends=True)
    (older / "stack.env").write_text("".join(x for x in lines if not x.startswith("LOGIN_ROW_KEYS_FILE=")))
    (older / "stack.env").chmod(0o600)
    done = cli_stack.run(
        "--stack", str(older), "--as", "privacy-officer",
        "erase", *tokens, "--user-id", person, "--purpose", "GDPR-W46-7", "--yes",
    )  # fmt: skip
    assert done.returncode == 2 and "a stack started before row signing" in done.stderr, done.stderr
    assert "use --stack .stack" not in done.stderr, done.stderr
    assert revealed(cli_stack, tokens) == [ip, dev]
    print(f"\nW46-7 messages; {time.monotonic() - started:.1f} s")


def test_w46_6_the_security_team_lists_the_rows_that_do_not_verify(cli_stack: CliStack) -> None:
    """`audit login-rows`: the rows erase refused for, by event id and signed list - no user id, token or value."""
    started = time.monotonic()
    tags = [uuid.uuid4().hex for _ in range(3)]
    (ip_a, dev_a), (ip_b, dev_b), (ip_c, dev_c) = (people(t) for t in tags)
    person_a, person_b, person_c = (f"w466-{n}-{t[:8]}" for n, t in zip("abc", tags, strict=True))
    load(cli_stack, [(person_a, ip_a, dev_a), (person_b, ip_b, dev_b), (person_c, ip_c, dev_c)])
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as owner:  # the database owner's edits
        owner.execute("UPDATE user_logins SET user_id = %s WHERE user_id = %s", (person_a, person_b))
        owner.execute("UPDATE user_logins SET row_manifest = NULL WHERE user_id = %s", (person_c,))
        rows = owner.execute(
            "SELECT event_id, user_id, row_manifest, create_date FROM user_logins WHERE user_id IN (%s, %s)",
            (person_a, person_c),
        ).fetchall()
    relabelled = next(e for e, u, m, _ in rows if u == person_a and m is not None and e.endswith("-1"))
    kept = next(e for e, _, _, _ in rows if e.endswith("-0"))
    unsigned = next(e for e, u, _, _ in rows if u == person_c)
    days = sorted({d for *_, d in rows})
    done = cli_stack.as_(
        "security", "audit", "login-rows", "--since", str(days[0]), "--until", str(days[-1]), "-o", "csv"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "event_id,row_manifest,finding,list_signed_at"
    assert [x for x in lines if x.startswith(f"{relabelled},") and ",does not verify," in x], done.stdout
    # Its row_manifest emptied, its list still lists it as it is: a signature cleared, not just unsigned (W47-7).
    assert [x for x in lines if x.startswith(f"{unsigned},") and ',"signature cleared: unsigned,' in x], done.stdout
    assert not [x for x in lines if x.startswith(kept)], done.stdout
    assert "do not verify: 1;" in done.stderr and "unsigned: " in done.stderr, done.stderr
    said = done.stdout + done.stderr
    assert not [s for s in (person_a, person_b, person_c, ip_a, ip_b, ip_c, dev_a, dev_b, dev_c) if s in said]
    assert not [t for p in (person_a, person_c) for t in _tokens_of_all(cli_stack, p) if t in said]
    print(f"\nW46-6 audit login-rows; {time.monotonic() - started:.1f} s")


def _tokens_of_all(stack: CliStack, user: str) -> list[str]:
    rows = stack.analyst_query(f"SELECT masked_ip, masked_device_id FROM user_logins WHERE user_id = '{user}'")
    return [str(t) for row in rows for t in row]
