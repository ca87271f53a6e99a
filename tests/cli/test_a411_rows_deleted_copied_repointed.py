"""Rows the database owner deleted, copied or re-pointed are found by their load batch's signed list (A41-1's Left).

The ETL signs, per load batch, the digests of its rows; `erase` verified the rows holding the tokens, but a row the
owner deleted, or re-pointed away from the tokens (its tokens replaced), is not among them, and a copy of a signed
row verified as its original. So a value shared with that row's person was erased for them without
--including-other-people. Now `erase` reads every row of the lists its rows name: a listed row missing refuses
unless the officer confirms their number (`--accepting-missing-rows N`: the data team's retention deletes rows too);
a row changed or copied refuses outright. `audit login-rows` prints each list with rows missing (reported, exit 0),
changed or copied (exit 1). Counts and list ids only: no user id, token or value.
Real SQS, the stack's ETL, the vault service, OpenBao and PostgreSQL; the `tokenvault` console script.
"""

from __future__ import annotations

import shlex
import time
import uuid

import psycopg
import pytest

from tests.cli.conftest import CliStack
from tests.cli.erase_logins import erase, load, people, revealed, tokens_of

MISSING = "the ETL signed in the load batches of the rows holding these tokens"
NOT_MATCHING = "do not match the ETL's signed list of their batch"
UNIQUE_EVENT_ID = "CREATE UNIQUE INDEX IF NOT EXISTS user_logins_event_id_key ON public.user_logins (event_id)"
"""migrations/0003_user_logins.sql's index, put back after the copy test."""


pytestmark = pytest.mark.usefixtures("loaded_rows_removed")


def _load_in_one_batch(stack: CliStack, logins: list[tuple[str, str, str]]) -> uuid.UUID:
    """Load the logins until the ETL puts them in one batch (one signed list); that list's id."""
    users = sorted({u for u, _, _ in logins})
    for _ in range(4):
        load(stack, logins)
        with psycopg.connect(stack.env["PG_ADMIN_DSN"]) as owner:
            lists = owner.execute(
                "SELECT DISTINCT row_manifest FROM user_logins WHERE user_id = ANY(%s)", (users,)
            ).fetchall()
            if len(lists) == 1 and lists[0][0] is not None:
                return uuid.UUID(str(lists[0][0]))
            owner.execute("DELETE FROM user_logins WHERE user_id = ANY(%s)", (users,))
    raise AssertionError("the ETL never loaded these logins in one batch")


def _as_owner(stack: CliStack, *statements: tuple[str, tuple[object, ...]]) -> None:
    """The database owner's edits (the migrator's login owns public.user_logins), in one transaction."""
    with psycopg.connect(stack.env["PG_ADMIN_DSN"]) as owner:
        for sql, params in statements:
            owner.execute(sql.encode(), params)


def _audit(stack: CliStack, listed: uuid.UUID) -> tuple[int, str, str]:
    """The security team's `audit login-rows` from the day the list's rows were created (or today) on."""
    with psycopg.connect(stack.env["PG_ADMIN_DSN"]) as conn:
        ((first,),) = conn.execute(
            "SELECT least(min(create_date), (now() AT TIME ZONE 'UTC')::date) FROM user_logins WHERE row_manifest = %s",
            (listed,),
        ).fetchall()
    done = stack.as_("security", "audit", "login-rows", "--since", str(first), "-o", "csv")
    return done.returncode, done.stdout, done.stderr


def _says_nothing_of(said: str, *secrets: str) -> None:
    assert not [s for s in secrets if s in said], "a user id, token or value was printed"


def test_a411_a_deleted_row_sharing_the_value_refuses_the_erasure_until_its_number_is_confirmed(
    cli_stack: CliStack,
) -> None:
    """B shares A's address; the owner deletes B's row: A's erasure no longer sees B - but A's batch misses a row."""
    started = time.monotonic()
    tag_a, tag_b = uuid.uuid4().hex, uuid.uuid4().hex
    (ip_shared, dev_a), (_, dev_b) = people(tag_a), people(tag_b)
    person_a, person_b = f"a411-da-{tag_a[:8]}", f"a411-db-{tag_b[:8]}"
    listed = _load_in_one_batch(cli_stack, [(person_a, ip_shared, dev_a), (person_b, ip_shared, dev_b)])
    tokens_a = tokens_of(cli_stack, person_a)
    _as_owner(cli_stack, ("DELETE FROM user_logins WHERE user_id = %s", (person_b,)))

    code, out, err = erase(cli_stack, *tokens_a, "--user-id", person_a)
    assert code == 1, out + err  # before: exit 0, the shared address erased for B uncounted
    assert f"1 row(s) {MISSING} (1 batch) are no longer in user_logins as signed" in err, err
    assert "retention" in err and "erasing nothing" in err and "--accepting-missing-rows 1" in err, err
    _says_nothing_of(out + err, person_a, person_b, *tokens_a, ip_shared, dev_a, dev_b)
    assert revealed(cli_stack, tokens_a) == [ip_shared, dev_a]

    code, out, err = _audit(cli_stack, listed)  # reported, not an alarm: retention deletes rows too
    assert code == 0, out + err
    assert [x for x in out.splitlines() if x.startswith(f",{listed},1 of 2 listed rows missing,")], out
    assert "signed lists with rows missing: " in err and "retention" in err, err
    _says_nothing_of(out + err, person_a, person_b, *tokens_a, ip_shared, dev_a, dev_b)

    code, out, err = erase(cli_stack, *tokens_a, "--user-id", person_a, "--accepting-missing-rows", "2")
    assert code == 1 and "--accepting-missing-rows 2 does not match the count now" in err, out + err
    assert revealed(cli_stack, tokens_a) == [ip_shared, dev_a]
    code, out, err = erase(cli_stack, *tokens_a, "--user-id", person_a, "--accepting-missing-rows", "1")
    assert code == 0 and out.count("erased") == 2, out + err
    assert revealed(cli_stack, tokens_a) == ["NOT_FOUND", "NOT_FOUND"]
    print(f"\nA41-1 deleted row: refused, reported, erased once confirmed; {time.monotonic() - started:.1f} s")


def test_a411_a_row_re_pointed_away_from_the_tokens_refuses_the_erasure_and_fails_the_audit(
    cli_stack: CliStack,
) -> None:
    """B shares A's address; the owner gives B's row another address token: B's row no longer holds A's tokens."""
    started = time.monotonic()
    tags = [uuid.uuid4().hex for _ in range(3)]
    (ip_shared, dev_a), (_, dev_b), (ip_c, dev_c) = (people(t) for t in tags)
    person_a, person_b, person_c = (f"a411-r{n}-{t[:8]}" for n, t in zip("abc", tags, strict=True))
    logins = [(person_a, ip_shared, dev_a), (person_b, ip_shared, dev_b), (person_c, ip_c, dev_c)]
    listed = _load_in_one_batch(cli_stack, logins)
    tokens_a, tokens_c = tokens_of(cli_stack, person_a), tokens_of(cli_stack, person_c)
    _as_owner(
        cli_stack, ("UPDATE user_logins SET masked_ip = %s WHERE user_id = %s", (tokens_c[0], person_b))
    )  # B's row now holds C's address token, not the shared one: the count of A's tokens no longer sees B

    code, out, err = erase(cli_stack, *tokens_a, "--user-id", person_a)
    assert code == 1, out + err  # before: exit 0, the shared address erased for B uncounted
    assert f"1 row(s) of the load batches of the rows holding these tokens {NOT_MATCHING}" in err, err
    assert "erasing nothing; report it to the security team" in err and "--accepting-missing-rows" not in err, err
    _says_nothing_of(out + err, person_a, person_b, person_c, *tokens_a, *tokens_c, ip_shared, ip_c, dev_a, dev_b)
    assert revealed(cli_stack, tokens_a) == [ip_shared, dev_a]

    code, out, err = _audit(cli_stack, listed)  # the row itself fails its digest (as before this change), and its list
    assert code == 1, out + err
    lines = out.splitlines()
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as owner:
        ((moved,),) = owner.execute("SELECT event_id FROM user_logins WHERE user_id = %s", (person_b,)).fetchall()
    assert [x for x in lines if x.startswith(f"{moved},{listed},does not verify,")], out
    assert f",{listed},1 of 3 listed rows missing; 1 row naming it not listed as they are (changed since)," in out
    assert "rows changed in their list: " in err, err
    _says_nothing_of(out + err, person_a, person_b, person_c, *tokens_a, *tokens_c, ip_shared, ip_c)
    print(f"\nA41-1 re-pointed row: erasure refused, audit fails; {time.monotonic() - started:.1f} s")


def test_a411_a_copied_row_needs_the_unique_index_dropped_and_then_refuses_the_erasure(cli_stack: CliStack) -> None:
    """Another person's signed row inserted again under the same list: refused by user_logins' unique event id
    index while it stands; the owner may drop it (owning the table), and then the copy is found."""
    started = time.monotonic()
    tag_a, tag_b = uuid.uuid4().hex, uuid.uuid4().hex
    (ip_a, dev_a), (ip_b, dev_b) = people(tag_a), people(tag_b)
    person_a, person_b = f"a411-ca-{tag_a[:8]}", f"a411-cb-{tag_b[:8]}"
    listed = _load_in_one_batch(cli_stack, [(person_a, ip_a, dev_a), (person_b, ip_b, dev_b)])
    tokens_a = tokens_of(cli_stack, person_a)
    copy = ("INSERT INTO user_logins SELECT * FROM user_logins WHERE user_id = %s", (person_b,))
    with pytest.raises(psycopg.errors.UniqueViolation):
        _as_owner(cli_stack, copy)
    try:
        _as_owner(cli_stack, ("DROP INDEX user_logins_event_id_key", ()), copy)

        code, out, err = erase(cli_stack, *tokens_a, "--user-id", person_a)
        assert code == 1, out + err  # before: exit 0 (the copy verifies as its original)
        assert f"1 row(s) of the load batches of the rows holding these tokens {NOT_MATCHING}" in err, err
        assert "copied" in err and "report it to the security team" in err, err
        _says_nothing_of(out + err, person_a, person_b, *tokens_a, ip_a, ip_b, dev_a, dev_b)
        assert revealed(cli_stack, tokens_a) == [ip_a, dev_a]

        code, out, err = _audit(cli_stack, listed)
        assert code == 1 and f",{listed},1 copy of listed rows," in out, out + err
        assert "copies of signed rows: " in err, err
    finally:
        _as_owner(
            cli_stack,
            ("DELETE FROM user_logins WHERE user_id = %s", (person_b,)),  # the copy and its original
            (UNIQUE_EVENT_ID, ()),
        )
    print(f"\nA41-1 copied row: unique index, then refused once dropped; {time.monotonic() - started:.1f} s")


def test_a411_the_command_printed_to_erase_for_other_people_keeps_the_missing_rows_confirmed(
    cli_stack: CliStack,
) -> None:
    """Rows missing confirmed, then the other people's refusal: its command to go on carries that confirmation."""
    started = time.monotonic()
    tags = [uuid.uuid4().hex for _ in range(3)]
    (ip_shared, dev_a), (_, dev_b), (ip_c, dev_c) = (people(t) for t in tags)
    person_a, person_b, person_c = (f"a411-p{n}-{t[:8]}" for n, t in zip("abc", tags, strict=True))
    logins = [(person_a, ip_shared, dev_a), (person_b, ip_shared, dev_b), (person_c, ip_c, dev_c)]
    _load_in_one_batch(cli_stack, logins)
    tokens_a = tokens_of(cli_stack, person_a)
    _as_owner(cli_stack, ("DELETE FROM user_logins WHERE user_id = %s", (person_c,)))  # retention, say

    code, out, err = erase(cli_stack, *tokens_a, "--user-id", person_a, "--accepting-missing-rows", "1")
    assert code == 1 and "1 other person's 1 row" in err, out + err  # B still shares the address
    (command,) = [
        line.strip() for line in err.splitlines() if line.strip().startswith("tokenvault ") and "--incl" in line
    ]
    words = shlex.split(command)
    assert words[words.index("--accepting-missing-rows") + 1] == "1", command  # before: left out, then refused
    done = cli_stack.run(*words[1:])
    assert done.returncode == 0 and done.stdout.count("erased") == 2, done.stdout + done.stderr
    assert revealed(cli_stack, tokens_a) == ["NOT_FOUND", "NOT_FOUND"]
    print(f"\nA41-1 printed command keeps --accepting-missing-rows; {time.monotonic() - started:.1f} s")
