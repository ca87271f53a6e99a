"""A row planted by the ETL's identity no longer blocks a person's erasure for good (attack 47, A47-3).

The ETL's database role (INSERT on user_logins, the person's token learnt by tokenizing their value, its job)
added one row holding P's token that names a signed list that does not exist, its create_date NULL: every
`erase` of P's values was refused - no flag overrode it, only the database owner could delete the row - and the
security team's `audit login-rows --since ...` (a create_date range) never listed it. Now the refusal names the
rows by event id and signed list (no user id, token or value), `audit login-rows` includes every row with no
create_date, and the officer, once the security team has looked, erases with `--accepting-unverified-rows N`
(N as counted): such a row is never the person's, it counts as one more other person (--including-other-people).
The default stays fail-closed.

Real SQS, the stack's ETL, the vault service, OpenBao and PostgreSQL; the `tokenvault` console script.
"""

from __future__ import annotations

import datetime
import shlex
import uuid

import psycopg
import pytest

from tests.cli.conftest import CliStack
from tests.cli.erase_logins import RUN, erase, load, people, revealed, tokens_of

REFUSED = "1 row(s) of user_logins holding these tokens do not verify against the ETL's signature"


pytestmark = pytest.mark.usefixtures("loaded_rows_removed")


def _planted_beside(cli_stack: CliStack, tag: str) -> tuple[str, str, str, tuple[str, str], str, uuid.UUID]:
    """A person's login loaded, and a row the ETL's identity planted holding their ip token: (person, ip, device,
    their tokens, the planted row's event id, the signed list it names - which does not exist)."""
    ip, dev = people(tag)
    person = f"a47-p-{tag[:8]}"
    load(cli_stack, [(person, ip, dev)])
    tokens = tokens_of(cli_stack, person)
    planted, manifest = f"e3-{RUN}-planted-{tag[:8]}", uuid.uuid4()
    with psycopg.connect(cli_stack.env["PG_ETL_DSN"]) as etl:  # the ETL's identity's one INSERT
        etl.execute(
            "INSERT INTO public.user_logins (user_id, masked_ip, masked_device_id, create_date, event_id, row_manifest)"
            " VALUES ('someone', %s, NULL, NULL, %s, %s)",
            (tokens[0], planted, manifest),
        )
    return person, ip, dev, tokens, planted, manifest


def test_a47_3_a_planted_row_is_named_found_by_the_audit_and_overridden_by_its_count(cli_stack: CliStack) -> None:
    person, ip, dev, tokens, planted, manifest = _planted_beside(cli_stack, uuid.uuid4().hex)

    # Fail-closed by default, the planted row named for the security team - never a user id, token or value.
    code, out, err = erase(cli_stack, *tokens, "--user-id", person)
    assert code == 1 and REFUSED in err and "erasing nothing" in err, out + err
    assert f"event {planted} (list {manifest})" in err and "--accepting-unverified-rows 1 erases anyway" in err
    assert not [s for s in (person, "someone", ip, dev, *tokens) if s in err], err
    # The security team's audit finds it whatever range it asks for: its create_date is NULL.
    today = datetime.date.today().isoformat()
    audit = cli_stack.as_("security", "audit", "login-rows", "--since", today, "--until", today, "-o", "csv")
    assert audit.returncode == 1, audit.stdout + audit.stderr
    assert f"{planted},{manifest},does not verify,\n" in audit.stdout, audit.stdout  # no list of that id
    assert "or with no create_date" in audit.stderr, audit.stderr

    # A wrong count is refused; the right one counts the row as one more other person, confirmed in turn.
    code, out, err = erase(cli_stack, *tokens, "--user-id", person, "--accepting-unverified-rows", "2")
    assert code == 1 and "--accepting-unverified-rows 2 does not match the count now" in err, out + err
    code, out, err = erase(cli_stack, *tokens, "--user-id", person, "--accepting-unverified-rows", "1")
    assert code == 1 and f"{tokens[0]}: 1 other person's 1 row (the person's own: 1 row)" in err, out + err
    assert "--including-other-people 1 --accepting-unverified-rows 1" in err, err
    assert revealed(cli_stack, tokens) == [ip, dev]  # nothing erased yet
    code, out, err = erase(
        cli_stack, *tokens, "--user-id", person, "--accepting-unverified-rows", "1", "--including-other-people", "1"
    )
    assert code == 0 and out.count("erased") == 2, out + err
    assert revealed(cli_stack, tokens) == ["NOT_FOUND", "NOT_FOUND"]


def test_the_keep_command_after_a_confirmed_count_runs_as_printed(cli_stack: CliStack) -> None:
    """Review 53, R53-2: the refusal's command that keeps the shared value (walk 53, W53-5) carried the
    --accepting-unverified-rows count confirmed for all the tokens; for the device token alone the check counts 0,
    so the command was refused as printed ("does not match the count now"). It now leaves the confirmations out."""
    person, ip, dev, tokens, _, _ = _planted_beside(cli_stack, uuid.uuid4().hex)
    code, out, err = erase(cli_stack, *tokens, "--user-id", person, "--accepting-unverified-rows", "1")
    assert code == 1 and f"{tokens[0]}: 1 other person's 1 row (the person's own: 1 row)" in err, out + err
    (keep,) = [line.strip() for line in err.splitlines() if line.strip().startswith("tokenvault ") and "--leav" in line]
    assert "--accepting-unverified-rows" not in keep, keep
    done = cli_stack.run(*shlex.split(keep)[1:])
    assert done.returncode == 0 and done.stdout.count("erased") == 1, done.stdout + done.stderr
    assert ip not in done.stdout + done.stderr and dev not in done.stdout + done.stderr  # tokens only
    assert revealed(cli_stack, tokens) == [ip, "NOT_FOUND"]  # the ip kept, the device erased


def test_a47_3_a_row_that_does_not_verify_is_never_taken_for_the_persons(cli_stack: CliStack) -> None:
    """The override does not let a relabelled row vouch for a token: B's row given A's user id does not verify,
    and with its count confirmed B's tokens are still held by no verified row of A - refused (A47-2)."""
    tag_a, tag_b = uuid.uuid4().hex, uuid.uuid4().hex
    (ip_a, dev_a), (ip_b, dev_b) = people(tag_a), people(tag_b)
    person_a, person_b = f"a47-a-{tag_a[:8]}", f"a47-b-{tag_b[:8]}"
    load(cli_stack, [(person_a, ip_a, dev_a)])
    load(cli_stack, [(person_b, ip_b, dev_b)])
    tokens_b = tokens_of(cli_stack, person_b)
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as owner:
        owner.execute("UPDATE user_logins SET user_id = %s WHERE user_id = %s", (person_a, person_b))
    code, out, err = erase(cli_stack, *tokens_b, "--user-id", person_a)  # refused, no other word
    assert code == 1 and "--accepting-unverified-rows 1 erases anyway" in err, out + err
    # B's original row is missing from its signed list too (the relabelled one is not it): confirmed as well.
    confirmed = ("--accepting-unverified-rows", "1", "--accepting-missing-rows", "1")
    code, out, err = erase(cli_stack, *tokens_b, "--user-id", person_a, *confirmed)
    assert code == 1 and "2 of the 2 tokens are held by no row of user_logins whose user id is exactly" in err, (
        out + err
    )
    assert revealed(cli_stack, tokens_b) == [ip_b, dev_b]


def test_r47_5_without_user_id_a_lone_row_that_does_not_verify_is_one_more_person(cli_stack: CliStack) -> None:
    """Review 47, R47-5: A41-1's swap, erased without --user-id. B's ip token is held only by A's changed row,
    which does not verify; it was "one person of one", nothing reached anyone, and --accepting-unverified-rows
    alone erased B's value. Now that row is one more person: --including-other-people 1 is asked for first."""
    tag_a, tag_b = uuid.uuid4().hex, uuid.uuid4().hex
    (ip_a, dev_a), (ip_b, dev_b) = people(tag_a), people(tag_b)
    person_a, person_b = f"a47-a-{tag_a[:8]}", f"a47-b-{tag_b[:8]}"
    load(cli_stack, [(person_a, ip_a, dev_a)])
    load(cli_stack, [(person_b, ip_b, dev_b)])
    (ip_token_a, _), (ip_token_b, dev_token_b) = tokens_of(cli_stack, person_a), tokens_of(cli_stack, person_b)
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as owner:  # attack 41's swap: one UPDATE
        owner.execute(
            "UPDATE user_logins SET masked_ip = CASE user_id WHEN %(a)s THEN %(ib)s ELSE %(ia)s END"
            " WHERE user_id IN (%(a)s, %(b)s)",
            {"a": person_a, "b": person_b, "ia": ip_token_a, "ib": ip_token_b},
        )
    code, out, err = erase(cli_stack, ip_token_b)
    assert code == 1 and "--accepting-unverified-rows 1 erases anyway" in err, out + err
    # A's changed row is missing from its signed list as signed too: confirmed as well (what the attacker needs).
    confirmed = ("--accepting-unverified-rows", "1", "--accepting-missing-rows", "1")
    code, out, err = erase(cli_stack, ip_token_b, *confirmed)
    assert code == 1 and "1 of the 1 tokens are in the rows of several people" in err, out + err
    assert f"{ip_token_b}: 1 person's 1 row" in err and "--including-other-people 1" in err, err
    assert not [s for s in (person_a, person_b, ip_a, ip_b, dev_a, dev_b) if s in err], err
    assert revealed(cli_stack, (ip_token_b, dev_token_b)) == [ip_b, dev_b]  # nothing erased
