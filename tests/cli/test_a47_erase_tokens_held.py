"""`erase --user-id A` and `reveal --verify-rows` refuse a token no verified row of A holds (attack 47, A47-2).

Both verified the rows holding the tokens *as the count's session saw them*, and a token held by no row at all
passed - nothing to verify, no one else. The database owner put a view in place of user_logins showing B's rows
as A's to the investigator's query and hiding them from the count's session (application_name): B's values, his
alone, were erased through A's request, every check passing; or, with no view, deleted B's rows for the count's
moment. Now: the tables the count reads must be plain tables, `erase --user-id` refuses (erasing nothing) each
token held by no row whose user id is exactly one of --user-id's and that verifies (--from-dead-letters excepted),
and `reveal --verify-rows` refuses a token no verified row holds.

Real SQS, the stack's ETL, the vault service, OpenBao and PostgreSQL; the `tokenvault` console script.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.cli.conftest import CliStack
from tests.cli.erase_logins import RUN, erase, load, people, revealed, tokens_of


@pytest.fixture(autouse=True)
def _restored_after(cli_stack: CliStack) -> Iterator[None]:
    """public.user_logins put back as the table it was; the rows of this module removed."""
    yield
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT relkind::text FROM pg_class WHERE oid = 'public.user_logins'::regclass").fetchone()
        if row is not None and row[0] == "v":
            conn.execute("DROP VIEW public.user_logins")
            conn.execute("ALTER TABLE public.a47_user_logins_kept RENAME TO user_logins")
        conn.execute("DELETE FROM user_logins WHERE event_id LIKE %s", (f"e3-{RUN}-%",))


def _reveal_verified(stack: CliStack, query: str) -> tuple[int, str, str]:
    done = stack.as_(
        "fraud-investigator", "reveal", "--query", query, "--verify-rows", "--purpose", "INC-A47-2", "-o", "csv"
    )
    return done.returncode, done.stdout, done.stderr


def test_a47_2_a_view_in_place_of_user_logins_is_refused_by_reveal_and_erase(cli_stack: CliStack) -> None:
    tag = uuid.uuid4().hex
    (ip_a, dev_a), (ip_b, dev_b) = people(tag), people(uuid.uuid4().hex)
    person_a, person_b = f"a47-a-{tag[:8]}", f"a47-b-{tag[:8]}"
    load(cli_stack, [(person_a, ip_a, dev_a), (person_b, ip_b, dev_b)])
    tokens_a, tokens_b = tokens_of(cli_stack, person_a), tokens_of(cli_stack, person_b)
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as owner:  # the database owner's view, as attack 47's
        columns = [
            str(name)
            for (name,) in owner.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
                " AND table_name = 'user_logins' ORDER BY ordinal_position"
            ).fetchall()
        ]
        shown = ", ".join(
            f"CASE WHEN k.user_id = '{person_b}' THEN '{person_a}'::varchar ELSE k.user_id END AS user_id"
            if c == "user_id"
            else f"k.{c}"
            for c in columns
        )
        owner.execute("ALTER TABLE public.user_logins RENAME TO a47_user_logins_kept")
        owner.execute(
            f"CREATE VIEW public.user_logins AS SELECT {shown}, k.ctid AS ctid FROM public.a47_user_logins_kept k"
            " WHERE pg_catalog.current_setting('application_name') <> 'tokenvault-cli erase'"
            f" OR k.user_id IS DISTINCT FROM '{person_b}'"
        )
        owner.execute("GRANT SELECT ON public.user_logins TO tokenvault_analyst")

    query = f"SELECT masked_ip, masked_device_id FROM user_logins WHERE user_id = '{person_a}'"
    code, out, err = _reveal_verified(cli_stack, query)
    assert code == 1 and "public.user_logins is a view, not the plain table the ETL loads" in err, out + err
    assert "nothing was revealed" in err and ip_b not in out + err, out + err
    code, out, err = erase(cli_stack, *tokens_a, *tokens_b, "--user-id", person_a)
    assert code == 1 and "public.user_logins is a view" in err and "nothing was erased" in err, out + err
    assert revealed(cli_stack, tokens_b) == [ip_b, dev_b]  # B's values kept
    assert revealed(cli_stack, tokens_a) == [ip_a, dev_a]


def test_a47_2_erase_refuses_tokens_no_row_of_the_person_holds(cli_stack: CliStack) -> None:
    """Without a view: the owner deletes B's rows for the count's moment (and puts them back after). The officer,
    handed B's tokens as A's, is refused them - and A's own tokens erase as before once B's are left out."""
    tag = uuid.uuid4().hex
    (ip_a, dev_a), (ip_b, dev_b) = people(tag), people(uuid.uuid4().hex)
    person_a, person_b = f"a47-a-{tag[:8]}", f"a47-b-{tag[:8]}"
    load(cli_stack, [(person_a, ip_a, dev_a)])
    load(cli_stack, [(person_b, ip_b, dev_b)])  # another load batch: A's signed list does not list B's row
    tokens_a, tokens_b = tokens_of(cli_stack, person_a), tokens_of(cli_stack, person_b)
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as owner:
        owner.execute("CREATE TEMP TABLE kept AS SELECT * FROM public.user_logins WHERE user_id = %s", (person_b,))
        owner.execute("DELETE FROM public.user_logins WHERE user_id = %s", (person_b,))
        owner.commit()
        try:
            code, out, err = erase(cli_stack, *tokens_a, *tokens_b, "--user-id", person_a)
            refused = "2 of the 4 tokens are held by no row of user_logins whose user id is exactly --user-id's"
            assert code == 1 and refused in err and "nothing was erased" in err, out + err
            assert "\n".join(f"  {t}" for t in tokens_b) in err and person_b not in err, err
            assert revealed(cli_stack, tokens_b) == [ip_b, dev_b]  # B's values kept
            assert revealed(cli_stack, tokens_a) == [ip_a, dev_a]  # nothing erased
            # The investigator's reveal of a token no verified row holds (here a literal) is refused too.
            literal = f"SELECT masked_ip FROM (VALUES ('{tokens_b[0]}')) AS v(masked_ip)"
            code, out, err = _reveal_verified(cli_stack, literal)
            assert code == 1 and "1 of the 1 tokens to reveal are held by no row of user_logins" in err, out + err
            assert "revealing nothing" in err and ip_b not in out + err, out + err
        finally:
            owner.execute("INSERT INTO public.user_logins SELECT * FROM kept")
            owner.commit()
    code, out, err = erase(cli_stack, *tokens_a, "--user-id", person_a)
    assert code == 0 and out.count("erased") == 2, out + err
    assert revealed(cli_stack, tokens_a) == ["NOT_FOUND", "NOT_FOUND"]
    assert revealed(cli_stack, tokens_b) == [ip_b, dev_b]
