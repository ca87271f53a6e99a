"""Attack 50, A50-1: the index check of A49-2 runs when `erase` runs - not when the officer collects the person's
tokens. The owner hides one of A's rows from the collecting query only for as long as it runs (a lying index on
user_id, or - as the table's owner, no superuser - a row-level security policy), then undoes it. Before the fix
`erase` saw plain built-in indexes and no policy, erased what it was given, exit 0, and A's hidden row kept its
values, revealable, with no row ever missing, changed or unsigned for `audit login-rows` to name.

Now `erase --user-id A` reads A's rows itself, by user id, in its count's snapshot and under its checks: A's
verified row holding tokens not given refuses the erasure (exit 1, nothing erased), naming those tokens (never a
value) and the command with them included - which, run as printed, erases all four values.
"""

from __future__ import annotations

import datetime
import shlex
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.cli.conftest import CliStack
from tests.cli.erase_logins import RUN, erase, load, people, revealed
from tokenvault_cli.erase_reach import PERSONS_ROWS_SQL

LYING_CLASS = """
CREATE OR REPLACE FUNCTION public.a50_cmp(a text, b text) RETURNS int4 LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE WHEN current_setting('a50.lie', true) = 'on' THEN 1 ELSE pg_catalog.bttextcmp(a, b) END $$;
CREATE OPERATOR FAMILY public.a50_ops USING btree;
CREATE OPERATOR CLASS public.a50_text_ops FOR TYPE text USING btree FAMILY public.a50_ops AS
  OPERATOR 1 pg_catalog.<(text, text), OPERATOR 2 pg_catalog.<=(text, text), OPERATOR 3 pg_catalog.=(text, text),
  OPERATOR 4 pg_catalog.>=(text, text), OPERATOR 5 pg_catalog.>(text, text), FUNCTION 1 public.a50_cmp(text, text);
"""
UNDO_INDEX = """
DROP INDEX IF EXISTS public.user_logins_a50_user_id;
DROP OPERATOR FAMILY IF EXISTS public.a50_ops USING btree CASCADE;
DROP FUNCTION IF EXISTS public.a50_cmp(text, text);
"""
UNDO_POLICY = """
DROP POLICY IF EXISTS a50_hide ON public.user_logins;
ALTER TABLE public.user_logins DISABLE ROW LEVEL SECURITY;
"""


@pytest.fixture(autouse=True)
def _undone_after(cli_stack: CliStack) -> Iterator[None]:
    yield
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"], autocommit=True) as owner:
        owner.execute(UNDO_INDEX + UNDO_POLICY)
        owner.execute("DELETE FROM user_logins WHERE event_id LIKE %s", (f"e3-{RUN}-%",))
        owner.execute("ANALYZE public.user_logins")


def _two_logins_of_one_person(cli_stack: CliStack, letter: str) -> tuple[str, str, str, str, str]:
    tag, tag2 = uuid.uuid4().hex, uuid.uuid4().hex
    (ip, dev), (ip2, dev2) = people(tag), people(tag2)
    person = f"a50-{letter}-{tag[:8]}"
    load(cli_stack, [(person, ip, dev)])
    load(cli_stack, [(person, ip2, dev2)])  # A's second login, another batch (another signed list)
    return person, ip, dev, ip2, dev2


def _collect(cli_stack: CliStack, person: str) -> list[str]:
    sql = f"SELECT DISTINCT masked_ip, masked_device_id FROM user_logins WHERE user_id COLLATE \"C\" = '{person}'"
    return [str(t) for row in cli_stack.analyst_query(sql) for t in row]


def _audits_today(cli_stack: CliStack) -> int:
    today = datetime.date.today().isoformat()
    done = cli_stack.as_("security", "audit", "login-rows", "--since", today, "--until", today)
    print(f"audit login-rows today: exit {done.returncode}: {done.stderr[-400:]}")
    return done.returncode


def _tokens_of_all_rows(cli_stack: CliStack, person: str) -> set[str]:
    """A's tokens as the database owner reads them, every row (the owner's index and policy gone)."""
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"], autocommit=True) as owner:
        found = owner.execute(
            "SELECT masked_ip, masked_device_id FROM user_logins WHERE user_id = %s", (person,)
        ).fetchall()
    return {str(t) for row in found for t in row}


def _refused_then_erased_as_printed(
    cli_stack: CliStack, how: str, person: str, tokens: list[str], values: tuple[str, ...]
) -> None:
    """`erase --user-id A` with the tokens collected: refused naming the hidden row's; as printed: all erased."""
    hidden = sorted(_tokens_of_all_rows(cli_stack, person) - set(tokens))
    assert len(hidden) == 2, hidden
    code, out, err = erase(cli_stack, *tokens, "--user-id", person)
    print(f"A50-1 ({how}): erase exit {code}: {err[-900:]}")
    assert code == 1 and out == "", out + err
    assert "nothing was erased: --user-id's own rows of user_logins" in err and "hold 2 tokens you did not give" in err
    assert all(f"\n  {t}\n" in err for t in hidden), err
    assert not any(v in err for v in values)  # tokens only, never a value
    assert sorted(revealed(cli_stack, tuple(sorted(_tokens_of_all_rows(cli_stack, person))))) == sorted(values)
    (command,) = [line.strip() for line in err.splitlines() if line.strip().startswith("tokenvault ")]
    words = shlex.split(command)
    assert set(hidden) | set(tokens) <= set(words) and words[words.index("--user-id") + 1] == person
    done = cli_stack.run(*words[1:])
    print(f"A50-1 ({how}): as printed: exit {done.returncode}: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stdout + done.stderr
    left = [v for v in values if v in revealed(cli_stack, tuple(_tokens_of_all_rows(cli_stack, person)))]
    assert left == []  # all four of A's values erased
    assert _audits_today(cli_stack) == 0


def test_a50_1_lying_user_id_index_dropped_between_collection_and_erase(cli_stack: CliStack) -> None:
    person, ip, dev, ip2, dev2 = _two_logins_of_one_person(cli_stack, "x")
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"], autocommit=True) as owner:
        owner.execute(
            "INSERT INTO user_logins (user_id, masked_ip, masked_device_id, event_id, create_date)"
            " SELECT 'zz-fill-' || g, 'zz-fill-' || g, 'zz-fill-' || g, %s || g, DATE '2020-01-01'"
            " FROM generate_series(1, 20000) g",
            (f"e3-{RUN}-fill-",),
        )
        owner.execute(LYING_CLASS)
        owner.execute(
            'CREATE INDEX user_logins_a50_user_id ON public.user_logins (user_id COLLATE "C" public.a50_text_ops)'
        )
        with owner.transaction():  # A's second row deleted and put back byte for byte, the lie on
            owner.execute("SET LOCAL session_replication_role = replica")
            owner.execute("SELECT set_config('a50.lie', 'on', true)")
            owner.execute(
                "CREATE TEMP TABLE a50_rows ON COMMIT DROP AS SELECT * FROM user_logins"
                " WHERE user_id = %s AND masked_device_id IS NOT NULL",
                (person,),
            )
            owner.execute("DELETE FROM a50_rows WHERE event_id <> (SELECT max(event_id) FROM a50_rows)")
            owner.execute("DELETE FROM user_logins WHERE event_id IN (SELECT event_id FROM a50_rows)")
            owner.execute("INSERT INTO user_logins SELECT * FROM a50_rows")
        owner.execute("ANALYZE public.user_logins")
    tokens = _collect(cli_stack, person)  # the officer collects A's tokens as the README says
    assert len(tokens) == 2, tokens  # one of A's two rows is missing from it
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"], autocommit=True) as owner:
        owner.execute(UNDO_INDEX)  # the owner's index gone before the officer runs erase
    _refused_then_erased_as_printed(cli_stack, "index", person, tokens, (ip, dev, ip2, dev2))


def test_a50_1b_rls_policy_on_while_collected_by_the_table_owner(cli_stack: CliStack) -> None:
    person, ip, dev, ip2, dev2 = _two_logins_of_one_person(cli_stack, "y")
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"], autocommit=True) as owner:
        hidden = owner.execute("SELECT max(event_id) FROM user_logins WHERE user_id = %s", (person,)).fetchone()[0]  # type: ignore[index]
        owner.execute("ALTER TABLE public.user_logins ENABLE ROW LEVEL SECURITY")
        owner.execute(f"CREATE POLICY a50_hide ON public.user_logins USING (event_id IS DISTINCT FROM '{hidden}')")
    try:
        tokens = _collect(cli_stack, person)
    finally:
        with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"], autocommit=True) as owner:
            owner.execute(UNDO_POLICY)
    assert len(tokens) == 2, tokens
    _refused_then_erased_as_printed(cli_stack, "policy", person, tokens, (ip, dev, ip2, dev2))


def test_a50_1_the_persons_rows_are_read_by_an_index_not_the_whole_table(cli_stack: CliStack) -> None:
    """PERSONS_ROWS_SQL finds a person's rows through migration 0073's index (a scan of a large table would pass the
    count's statement timeout and refuse every erasure)."""
    with psycopg.connect(cli_stack.env["PG_ANALYST_DSN"]) as analyst:
        analyst.execute("SET enable_seqscan = off")
        plan = "\n".join(
            str(line)
            for (line,) in analyst.execute(
                ("EXPLAIN " + PERSONS_ROWS_SQL).encode(), {"person": ["a50-someone"], "limit": 10_001}
            ).fetchall()
        )
    print(plan)
    assert "user_logins_user_id" in plan, plan
