"""`tokenvault erase` verifies the rows of user_logins holding the tokens against the ETL's signature (A41-1).

The database owner (the migration login, owner of user_logins) swapped two people's tokens with one UPDATE; the
officer's `erase --user-id A`, its tokens and E3's count read from A's rows, destroyed B's values for good and left
A's revealable. The ETL now signs, per load batch, the digests of the rows it loads (Transit ed25519 key
tokenvault-login-rows), and `erase` checks the rows holding the tokens offline with the key's public keys (the
stack's login-row-keys.json) before anything else: a row changed outside the ETL does not verify and nothing is
erased (exit 1, "report it to the security team", counts only); a row carrying no signature (loaded before
migration 0068) is erased only once the officer confirms their number (--accepting-unsigned-rows N). The fraud
investigator's `reveal --query --verify-rows` refuses the same way.
Real SQS, the stack's ETL, the vault service, OpenBao and PostgreSQL; the `tokenvault` console script.
"""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from tests.cli.conftest import CliStack
from tests.cli.erase_logins import erase, load, people, revealed, tokens_of

REFUSED = "do not verify against the ETL's signature"


pytestmark = pytest.mark.usefixtures("loaded_rows_removed")


def _as_owner(stack: CliStack, sql: str, params: dict[str, str]) -> None:
    """The database owner's edit (the migrator's login owns public.user_logins)."""
    with psycopg.connect(stack.env["PG_ADMIN_DSN"]) as owner:
        owner.execute(sql.encode(), params)


def _investigate(stack: CliStack, person: str) -> tuple[int, str, str]:
    """The fraud investigator's `reveal --query ... --verify-rows` of the person's logins."""
    query = f"SELECT masked_ip, masked_device_id FROM user_logins WHERE user_id = '{person}'"
    done = stack.as_(
        "fraud-investigator", "reveal", "--query", query, "--verify-rows", "--purpose", "INC-A411-1", "-o", "csv"
    )
    return done.returncode, done.stdout, done.stderr


def _says_nothing_of(err: str, *secrets: str) -> None:
    assert not [s for s in secrets if s in err], "the refusal names a user id, token or value"


def test_a411_tokens_swapped_between_two_people_are_refused_and_neither_person_loses_a_value(
    cli_stack: CliStack,
) -> None:
    started = time.monotonic()
    tag_a, tag_b = uuid.uuid4().hex, uuid.uuid4().hex
    (ip_a, dev_a), (ip_b, dev_b) = people(tag_a), people(tag_b)
    person_a, person_b = f"a411-a-{tag_a[:8]}", f"a411-b-{tag_b[:8]}"
    load(cli_stack, [(person_a, ip_a, dev_a), (person_b, ip_b, dev_b)])
    tokens_a, tokens_b = tokens_of(cli_stack, person_a), tokens_of(cli_stack, person_b)
    code, out, err = _investigate(cli_stack, person_a)
    assert code == 0 and f"{ip_a},{dev_a}" in out, out + err  # as loaded: verified and revealed
    # ... and it says so, for the case's record (walk48, W48-6: the output was the same as without the flag).
    assert "first verified the 1 row(s) of user_logins holding them against the ETL's signature" in err, err

    _as_owner(  # attack 41's swap: one UPDATE
        cli_stack,
        "UPDATE user_logins SET masked_ip = CASE user_id WHEN %(a)s THEN %(ib)s ELSE %(ia)s END,"
        " masked_device_id = CASE user_id WHEN %(a)s THEN %(db)s ELSE %(da)s END WHERE user_id IN (%(a)s, %(b)s)",
        {"a": person_a, "b": person_b, "ia": tokens_a[0], "ib": tokens_b[0], "da": tokens_a[1], "db": tokens_b[1]},
    )
    shown = tokens_of(cli_stack, person_a)
    assert shown == tokens_b  # A's rows now hold B's tokens

    code, out, err = erase(cli_stack, *shown, "--user-id", person_a)
    assert code == 1, out + err
    assert f"1 row(s) of user_logins holding these tokens {REFUSED}" in err, err  # A's row, holding B's tokens
    assert "erasing nothing" in err and "report it to the security team" in err, err
    _says_nothing_of(err + out, person_a, person_b, *tokens_a, *tokens_b, ip_a, ip_b, dev_a, dev_b)
    assert revealed(cli_stack, tokens_b) == [ip_b, dev_b]  # B's values are there
    assert revealed(cli_stack, tokens_a) == [ip_a, dev_a]
    # The investigator asking about A with --verify-rows is shown nothing rather than B's values.
    code, out, err = _investigate(cli_stack, person_a)
    assert code == 1 and f"{REFUSED}" in err and "revealing nothing" in err, out + err
    _says_nothing_of(err + out, ip_a, ip_b, dev_a, dev_b)
    print(f"\nA41-1 swap refused, both people's values kept; {time.monotonic() - started:.1f} s")


def test_a411_another_persons_row_relabelled_with_the_persons_user_id_is_refused(cli_stack: CliStack) -> None:
    """The edit that hid a person sharing the value from E3's count: B's row (same ip as A) given A's user id."""
    started = time.monotonic()
    tag_a, tag_b = uuid.uuid4().hex, uuid.uuid4().hex
    (ip_shared, dev_a), (_, dev_b) = people(tag_a), people(tag_b)
    person_a, person_b = f"a411-a-{tag_a[:8]}", f"a411-b-{tag_b[:8]}"
    load(cli_stack, [(person_a, ip_shared, dev_a), (person_b, ip_shared, dev_b)])
    tokens_a = tokens_of(cli_stack, person_a)
    _as_owner(cli_stack, "UPDATE user_logins SET user_id = %(a)s WHERE user_id = %(b)s", {"a": person_a, "b": person_b})

    code, out, err = erase(cli_stack, *tokens_a, "--user-id", person_a)
    assert code == 1, out + err
    assert f"1 row(s) of user_logins holding these tokens {REFUSED}" in err, err
    _says_nothing_of(err + out, person_a, person_b, *tokens_a, ip_shared, dev_a, dev_b)
    assert revealed(cli_stack, tokens_a) == [ip_shared, dev_a]  # nothing erased: B's address kept
    print(f"\nA41-1 relabelled row refused; {time.monotonic() - started:.1f} s")


def test_a411_unsigned_rows_are_erased_only_with_their_number_confirmed(cli_stack: CliStack) -> None:
    """Rows loaded before migration 0068 carry no signature (row_manifest NULL, as the owner can also make one)."""
    started = time.monotonic()
    tag = uuid.uuid4().hex
    ip, dev = people(tag)
    person = f"a411-u-{tag[:8]}"
    load(cli_stack, [(person, ip, dev), (person, ip, dev)])
    tokens = tokens_of(cli_stack, person)
    _as_owner(cli_stack, "UPDATE user_logins SET row_manifest = NULL WHERE user_id = %(p)s", {"p": person})

    code, out, err = erase(cli_stack, *tokens, "--user-id", person)
    assert code == 1, out + err
    assert "2 row(s) of user_logins holding these tokens carry no signature of the ETL" in err, err
    assert "--accepting-unsigned-rows 2" in err and "erasing nothing" in err, err
    _says_nothing_of(err + out, person, *tokens, ip, dev)
    code, out, err = erase(cli_stack, *tokens, "--user-id", person, "--accepting-unsigned-rows", "1")
    assert code == 1 and "--accepting-unsigned-rows 1 does not match the count now" in err, out + err
    assert revealed(cli_stack, tokens) == [ip, dev]  # nothing erased yet

    code, out, err = erase(cli_stack, *tokens, "--user-id", person, "--accepting-unsigned-rows", "2")
    assert code == 0 and out.count("erased") == 2, out + err
    assert revealed(cli_stack, tokens) == ["NOT_FOUND", "NOT_FOUND"]
    print(f"\nA41-1 unsigned rows erased once confirmed; {time.monotonic() - started:.1f} s")
