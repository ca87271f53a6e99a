"""Whose a row of user_logins is, decided from the verified row's own fields compared exactly (attack 47).

A47-1: the database owner put a nondeterministic ICU collation (case, accents, punctuation ignored) on
user_logins.user_id; the rows' digests bind the user id's bytes, but SQL's equality - the officer's count
(`user_id = ANY(person)`, `count(DISTINCT user_id)`) and the investigator's `WHERE user_id = 'A'` - used the
owner's collation: `A47-ANN-X`'s rows were `a47-ann-x`'s, every row verifying, and `erase --user-id a47-ann-x`
destroyed the other account's values (exit 0, no warning); without --user-id two people counted as one. Now
`erase` decides from the rows it verified, comparing user ids and tokens exactly in Python (REACH_SQL and ROWS_SQL
pin `COLLATE "C"` too), and `reveal --query --verify-rows` refuses while a column of user_logins compares other
than exactly (its SQL is the investigator's own).

Real SQS, the stack's ETL, the vault service, OpenBao and PostgreSQL; the `tokenvault` console script.
"""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.cli.conftest import CliStack
from tests.cli.erase_logins import RUN, erase, load, people, revealed, tokens_of

LOOSE = (
    "CREATE COLLATION IF NOT EXISTS public.a47_loose"
    " (provider = icu, locale = 'und-u-ka-shifted-ks-level1', deterministic = false)"
)
LOOSE_USER_ID = "ALTER TABLE public.user_logins ALTER COLUMN user_id TYPE varchar(128) COLLATE public.a47_loose"
NO_USER_ID_INDEX = "DROP INDEX IF EXISTS public.user_logins_user_id"
"""Migration 0073's index, dropped by the owner first: left, it is rebuilt under the loose collation and A49-2's index
check refuses before the column's collation is looked at (tests/cli/test_a49_lying_index.py covers that refusal)."""
USER_ID_INDEX = "CREATE INDEX IF NOT EXISTS user_logins_user_id ON public.user_logins (user_id)"


@pytest.fixture(autouse=True)
def _restored_after(cli_stack: CliStack) -> Iterator[None]:
    """Rows of this module removed, user_id's collation put back, the owner's collation dropped."""
    yield
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as conn:
        conn.execute('ALTER TABLE public.user_logins ALTER COLUMN user_id TYPE varchar(128) COLLATE "default"')
        conn.execute(USER_ID_INDEX)
        conn.execute("DROP COLLATION IF EXISTS public.a47_loose")
        conn.execute("DELETE FROM user_logins WHERE event_id LIKE %s", (f"e3-{RUN}-%",))


def _as_owner(stack: CliStack, *statements: str) -> None:
    """The database owner's edit (the migrator's login owns public.user_logins)."""
    with psycopg.connect(stack.env["PG_ADMIN_DSN"]) as owner:
        for statement in statements:
            owner.execute(statement.encode())


def test_a47_1_a_collation_on_user_id_does_not_make_another_accounts_rows_the_persons(cli_stack: CliStack) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex
    (ip_a, dev_a), (ip_b, dev_b) = people(tag), people(uuid.uuid4().hex)
    person_a = f"a47-ann-{tag[:8]}"
    person_b = person_a.upper()  # another account: user ids are case-sensitive strings
    load(cli_stack, [(person_a, ip_a, dev_a), (person_b, ip_b, dev_b)])
    tokens_a, tokens_b = tokens_of(cli_stack, person_a), tokens_of(cli_stack, person_b)
    _as_owner(cli_stack, LOOSE, NO_USER_ID_INDEX, LOOSE_USER_ID)  # no row of user_logins or of its lists changes

    # The investigator's query would return B's rows as A's: --verify-rows refuses, revealing nothing.
    query = f"SELECT masked_ip, masked_device_id FROM user_logins WHERE user_id = '{person_a}'"
    done = cli_stack.as_(
        "fraud-investigator", "reveal", "--query", query, "--verify-rows", "--purpose", "INC-A47-1", "-o", "csv"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "does not compare user ids and tokens exactly" in done.stderr and "nothing was revealed" in done.stderr
    assert "column user_id has a nondeterministic collation" in done.stderr, done.stderr
    assert ip_b not in done.stdout + done.stderr and ip_a not in done.stdout + done.stderr
    wanted = [str(t) for row in cli_stack.analyst_query(query) for t in row]
    assert set(tokens_b) <= set(wanted)  # what the query hands the officer as A's

    # The officer erases "A's" tokens naming A: B's rows are not A's, byte for byte - nothing is erased.
    code, out, err = erase(cli_stack, *wanted, "--user-id", person_a)
    assert code == 1 and "nothing was erased" in err, out + err
    assert person_b not in err and ip_b not in err, err
    assert revealed(cli_stack, tokens_b) == [ip_b, dev_b]  # B's values kept
    # A's own tokens, named by A's exact user id: erased as before.
    code, out, err = erase(cli_stack, *tokens_a, "--user-id", person_a)
    assert code == 0 and out.count("erased") == 2, out + err
    assert revealed(cli_stack, tokens_a) == ["NOT_FOUND", "NOT_FOUND"]
    assert revealed(cli_stack, tokens_b) == [ip_b, dev_b]
    # The security team's audit names the change to the table.
    today = datetime.date.today().isoformat()
    audit = cli_stack.as_("security", "audit", "login-rows", "--since", today, "--until", today)
    assert audit.returncode == 1, audit.stdout + audit.stderr
    assert "column user_id has a nondeterministic collation (equal strings that differ): erase and" in audit.stderr
    print(f"\nA47-1: another account's rows kept apart under the owner's collation; {time.monotonic() - started:.1f} s")


def test_a47_1_the_collation_does_not_merge_two_people_in_the_unnamed_count(cli_stack: CliStack) -> None:
    """Without --user-id, tokens of two people are refused: `count(DISTINCT user_id)` saw one under the collation."""
    tag = uuid.uuid4().hex
    (ip_a, dev_a), (ip_b, dev_b) = people(tag), people(uuid.uuid4().hex)
    person_a = f"a47-bo-{tag[:8]}"
    person_b = person_a.upper()
    load(cli_stack, [(person_a, ip_a, dev_a), (person_b, ip_b, dev_b)])
    wanted = [*tokens_of(cli_stack, person_a), *tokens_of(cli_stack, person_b)]
    _as_owner(cli_stack, LOOSE, NO_USER_ID_INDEX, LOOSE_USER_ID)
    code, out, err = erase(cli_stack, *wanted)
    assert code == 1 and "nothing was erased" in err, out + err
    assert "4 of the 4 tokens are in the rows of several people" in err and "2 people's 2 rows" in err, err
    assert revealed(cli_stack, tuple(wanted)) == [ip_a, dev_a, ip_b, dev_b]
