"""walk47's findings in the CLI the security team and the privacy officer use (W47-1, -4, -5, -6, -7, -14, -24).

A first user's walk of the README found a `login-row-keys refresh` pointed at another OpenBao silently replacing
the officers' trust anchor (W47-14) and ignoring `--as` (W47-6), refusals whose printed commands did not run as
written (W47-1, W47-5), a row whose signature the owner cleared counted as deleted (W47-7), and `audit login-rows`
reports that cut list ids in two or took swapped dates for a clean day (W47-4, W47-24).
Real SQS, the stack's ETL, the vault service, OpenBao and PostgreSQL; the `tokenvault` console script.
"""

from __future__ import annotations

import base64
import json
import shlex
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.cli.conftest import CliStack
from tests.cli.erase_logins import RUN, erase, people, revealed, tokens_of
from tests.cli.test_a47_erase_tokens_held import _reveal_verified
from tests.cli.test_a411_rows_deleted_copied_repointed import _load_in_one_batch

pytestmark = pytest.mark.usefixtures("loaded_rows_removed")


def _owner(stack: CliStack, sql: str, *params: object) -> None:
    """One statement of the database owner's (the migrator's login owns public.user_logins)."""
    with psycopg.connect(stack.env["PG_ADMIN_DSN"]) as owner:
        owner.execute(sql.encode(), params)


def _audit(stack: CliStack, *args: str, columns: str = "200") -> tuple[int, str, str]:
    done = stack.run(
        "--stack", str(stack.state_dir), "--as", "security", "audit", "login-rows", *args, env={"COLUMNS": columns}
    )
    return done.returncode, done.stdout, done.stderr


def _today(stack: CliStack) -> str:
    with psycopg.connect(stack.env["PG_ADMIN_DSN"]) as conn:
        ((day,),) = conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchall()
    return str(day)


def _another_public_key() -> str:
    raw = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode()


def test_w47_14_refresh_refuses_to_replace_or_drop_a_versions_key_and_w47_6_other_roles(
    cli_stack: CliStack, tmp_path: Path
) -> None:
    """A keys file whose v1 Transit answers with another public key, and which holds a v99 Transit lacks: refused,
    nothing written, unless --replace-keys (then said what changed); `--as analyst` is refused (W47-6)."""
    started = time.monotonic()
    held = json.loads(Path(cli_stack.env["LOGIN_ROW_KEYS_FILE"]).read_text())
    planted = dict(held["keys"])
    planted["1"] = {**planted["1"], "public_key": _another_public_key()}
    planted["99"] = {**planted["1"], "public_key": _another_public_key()}
    target = tmp_path / "keys.json"
    text = json.dumps({"name": held.get("name", "tokenvault-login-rows"), "keys": planted})
    target.write_text(text)

    def refresh(*args: str, role: str = "security") -> tuple[int, str]:
        done = cli_stack.run(
            "--stack", str(cli_stack.state_dir), "--as", role, "--login-row-keys", str(target),
            "login-row-keys", "refresh", *args,
        )  # fmt: skip
        return done.returncode, done.stdout + done.stderr

    code, said = refresh()
    assert code == 2, said
    assert f"{target} was not written: the key Vault at " in said, said
    assert "(another public key for v1; no v99)" in said and "--replace-keys" in said, said
    assert target.read_text() == text  # nothing written

    code, said = refresh(role="analyst")  # W47-6: the security team's token, whatever --as said
    assert code == 2 and "--as analyst is refused; run it with --as security" in said, said
    assert target.read_text() == text

    code, said = refresh("--replace-keys")
    assert code == 0, said
    assert "(before: v1, " in said and "v99; replaced: v1; dropped: v99)" in said, said
    assert sorted(json.loads(target.read_text())["keys"]) == sorted(held["keys"])

    code, said = refresh()  # the same server again: nothing changed, nothing refused
    assert code == 0 and "replaced" not in said and "dropped" not in said, said
    print(f"\nW47-14/W47-6 refresh: {time.monotonic() - started:.1f} s")


def test_w47_24_until_before_since_is_refused(cli_stack: CliStack) -> None:
    code, out, err = _audit(cli_stack, "--since", "2026-12-07", "--until", "2026-12-01")
    assert code == 2, out + err  # before: "rows created from 2026-12-07 to 2026-12-01: 0 ...", exit 0
    assert "2026-12-01 is before --since 2026-12-07: nothing checked" in err and "rows created" not in err, err


def test_w47_7_a_cleared_signature_is_not_a_deleted_row_and_audit_login_rows_raises_it(cli_stack: CliStack) -> None:
    """B shares A's address, both in one load batch; the owner empties B's row_manifest. A's erasure counts B's
    row as unsigned (said signed once) - not also as a row deleted - and the security team's audit exits 1."""
    started = time.monotonic()
    tag_a, tag_b = uuid.uuid4().hex, uuid.uuid4().hex
    (ip_shared, dev_a), (_, dev_b) = people(tag_a), people(tag_b)
    person_a, person_b = f"w477-a-{tag_a[:8]}", f"w477-b-{tag_b[:8]}"
    listed = _load_in_one_batch(cli_stack, [(person_a, ip_shared, dev_a), (person_b, ip_shared, dev_b)])
    tokens_a = tokens_of(cli_stack, person_a)
    _owner(cli_stack, "UPDATE user_logins SET row_manifest = NULL WHERE user_id = %s", person_b)

    code, out, err = erase(cli_stack, *tokens_a, "--user-id", person_a)
    assert code == 1 and "1 row(s) of user_logins holding these tokens carry no signature" in err, out + err
    assert "1 of them the ETL did sign: a signed list lists them as they are, their row_manifest emptied" in err, err
    assert "have the fraud investigator reveal them" in err, err  # W47-22: the officer's part
    code, out, err = erase(cli_stack, *tokens_a, "--user-id", person_a, "--accepting-unsigned-rows", "1")
    assert code == 1, out + err  # before: "1 row(s) the ETL signed ... are no longer in user_logins as signed"
    assert "no longer in user_logins" not in err and "--accepting-missing-rows" not in err, err
    assert f"{tokens_a[0]}: 1 other person's 1 row (the person's own: 1 row)" in err, err
    assert revealed(cli_stack, tokens_a) == [ip_shared, dev_a]

    # W47-22: the investigator is told their own part, not sent back to the officer's section.
    code, out, err = _reveal_verified(cli_stack, f"SELECT masked_ip FROM user_logins WHERE user_id = '{person_a}'")
    assert code == 1 and "compare each revealed value with that evidence" in err and ip_shared not in out, out + err

    code, out, err = _audit(cli_stack, "--since", _today(cli_stack), "-o", "csv")
    assert code == 1, out + err  # before: exit 0 - reported as a row missing, retention's case
    assert f",{listed},1 listed row present with its signature cleared (row_manifest emptied)," in out, out
    assert "signature cleared: unsigned, listed as it is by this signed list" in out, out
    assert "; signatures cleared: " in err and "signatures cleared: 0" not in err, err
    assert "the database owner did (walk47, W47-7)" in err, err
    said = out + err
    assert not [s for s in (person_a, person_b, ip_shared, dev_a, dev_b, *tokens_a) if s in said], said
    print(f"\nW47-7 cleared signature: {time.monotonic() - started:.1f} s")


def test_w47_1_the_missing_rows_refusal_prints_an_audit_that_runs_as_written_w47_4_in_80_columns(
    cli_stack: CliStack,
) -> None:
    """A's batch-mate B deleted: the officer's refusal gives the security team's command with --stack and the
    batch's day; run as printed it lists the list whole on an 80-column terminal, with when it was signed."""
    started = time.monotonic()
    tag_a, tag_b = uuid.uuid4().hex, uuid.uuid4().hex
    (ip_a, dev_a), (ip_b, dev_b) = people(tag_a), people(tag_b)
    person_a, person_b = f"w471-a-{tag_a[:8]}", f"w471-b-{tag_b[:8]}"
    listed = _load_in_one_batch(cli_stack, [(person_a, ip_a, dev_a), (person_b, ip_b, dev_b)])
    tokens_a = tokens_of(cli_stack, person_a)
    _owner(cli_stack, "DELETE FROM user_logins WHERE user_id = %s", person_b)
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as conn:
        ((signed_at,),) = conn.execute(
            "SELECT signed_at AT TIME ZONE 'UTC' FROM user_login_manifests WHERE manifest_id = %s", (listed,)
        ).fetchall()

    code, out, err = erase(cli_stack, *tokens_a, "--user-id", person_a)
    assert code == 1 and "--accepting-missing-rows 1" in err, out + err
    day = signed_at.date()
    printed = f"`tokenvault --stack {cli_stack.state_dir} --as security audit login-rows --since {day} --until {day}`"
    assert printed in err, err  # before: `tokenvault --as security audit login-rows --since DAY`
    done = cli_stack.run(*shlex.split(printed.strip("`"))[1:], env={"COLUMNS": "80"})  # as printed, 80 columns
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(listed) in done.stdout, done.stdout  # before: cut in two, "...-46f6-abe0-f2" / "a6dcd1aca9"
    assert signed_at.strftime("%Y-%m-%d %H:%M:%S") in done.stdout and "list signed (UTC)" in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 80, done.stdout
    assert not [s for s in (person_a, person_b, ip_a, ip_b, dev_a, dev_b, *tokens_a) if s in done.stdout + err]
    print(f"\nW47-1/W47-4 missing rows' audit as printed: {time.monotonic() - started:.1f} s")


def test_w47_20_a_policy_on_user_logins_is_named_as_the_owners_by_reveal_and_audit(cli_stack: CliStack) -> None:
    tag = uuid.uuid4().hex
    ip, dev = people(tag)
    person = f"w4720-{tag[:8]}"
    _load_in_one_batch(cli_stack, [(person, ip, dev)])
    _owner(cli_stack, "ALTER TABLE user_logins ENABLE ROW LEVEL SECURITY")
    _owner(cli_stack, "CREATE POLICY w47_ul ON user_logins USING (true)")
    try:
        code, out, err = _reveal_verified(cli_stack, f"SELECT masked_ip FROM user_logins WHERE user_id = '{person}'")
        assert code == 1 and "row-level security" in err and "nothing was revealed" in err, out + err
        assert "officer" not in err and "the database owner's - would choose which rows this check reads" in err, err
        code, out, err = _audit(cli_stack, "--since", _today(cli_stack))
        assert code == 1 and "nothing checked" in err, out + err
        assert "report it to the security team, who has the owner remove it" in err, err  # before: no hint
    finally:
        _owner(cli_stack, "DROP POLICY IF EXISTS w47_ul ON user_logins")
        _owner(cli_stack, "ALTER TABLE user_logins DISABLE ROW LEVEL SECURITY")


def test_w47_1_the_rows_that_do_not_verify_name_an_audit_that_runs_as_written(cli_stack: CliStack) -> None:
    """A's row relabelled and its batch-mate B's device changed: the refusal's `audit login-rows` for the rest of
    the batch carries --stack and the days (before: `audit login-rows`, nothing to run), and lists both rows."""
    started = time.monotonic()
    tag_a, tag_b = uuid.uuid4().hex, uuid.uuid4().hex
    (ip_a, dev_a), (ip_b, dev_b) = people(tag_a), people(tag_b)
    person_a, person_b = f"w471f-a-{tag_a[:8]}", f"w471f-b-{tag_b[:8]}"
    listed = _load_in_one_batch(cli_stack, [(person_a, ip_a, dev_a), (person_b, ip_b, dev_b)])
    tokens_a = tokens_of(cli_stack, person_a)
    _owner(cli_stack, "UPDATE user_logins SET user_id = %s WHERE user_id = %s", f"{person_a}-x", person_a)
    _owner(cli_stack, "UPDATE user_logins SET masked_device_id = NULL WHERE user_id = %s", person_b)
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as conn:
        ((day,),) = conn.execute("SELECT create_date FROM user_logins WHERE row_manifest = %s LIMIT 1", (listed,))

    code, out, err = erase(cli_stack, *tokens_a, "--user-id", person_a)
    assert code == 1 and "do not verify against the ETL's signature" in err, out + err
    printed = f"`tokenvault --stack {cli_stack.state_dir} --as security audit login-rows --since {day} --until {day}`"
    assert f"; and 1 other row of their load batches ({printed})" in err, err
    done = cli_stack.run(*shlex.split(printed.strip("`"))[1:], "-o", "csv")
    assert done.returncode == 1 and done.stdout.count(f",{listed},") >= 2, done.stdout + done.stderr
    assert not [s for s in (person_a, person_b, ip_a, ip_b, dev_a, dev_b, *tokens_a) if s in done.stdout + err]
    print(f"\nW47-1 rows that do not verify, audit as printed: {time.monotonic() - started:.1f} s")


def test_w47_7_unsigned_rows_and_rows_missing_are_refused_in_one_message(cli_stack: CliStack) -> None:
    """An unsigned row holding A's address and A's batch-mate C deleted: one refusal names both confirmations
    (before: the missing rows only once the unsigned were confirmed), and the two together go on to the count."""
    tag_a, tag_c = uuid.uuid4().hex, uuid.uuid4().hex
    (ip_a, dev_a), (ip_c, dev_c) = people(tag_a), people(tag_c)
    person_a, person_c = f"w477m-a-{tag_a[:8]}", f"w477m-c-{tag_c[:8]}"
    _load_in_one_batch(cli_stack, [(person_a, ip_a, dev_a), (person_c, ip_c, dev_c)])
    tokens_a = tokens_of(cli_stack, person_a)
    _owner(cli_stack, "DELETE FROM user_logins WHERE user_id = %s", person_c)
    _owner(
        cli_stack,
        "INSERT INTO user_logins (user_id, masked_ip, event_id) VALUES ('w477m-other', %s, %s)",
        tokens_a[0],
        f"e3-{RUN}-unsigned-{tag_a[:8]}",
    )
    code, out, err = erase(cli_stack, *tokens_a, "--user-id", person_a)
    assert code == 1 and "1 row(s) of user_logins holding these tokens carry no signature" in err, out + err
    assert "\nBesides: 1 row(s) the ETL signed in the load batches of the rows holding these tokens" in err, err
    assert "--accepting-unsigned-rows 1" in err and "--accepting-missing-rows 1" in err, err
    code, out, err = erase(
        cli_stack, *tokens_a, "--user-id", person_a, "--accepting-unsigned-rows", "1", "--accepting-missing-rows", "1"
    )
    assert code == 1 and f"{tokens_a[0]}: 1 other person's 1 row (the person's own: 1 row)" in err, out + err
    assert revealed(cli_stack, tokens_a) == [ip_a, dev_a]
