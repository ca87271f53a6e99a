"""Attack 49, A49-2: an index of the database owner's on user_logins, built with an operator class whose comparison
lies, is refused by `erase` and named by `audit login-rows` - it no longer hides another person's row from the count.

The count (REACH_SQL) and the rows' check (ROWS_SQL, HOLDING_TOKENS_WHERE) find the rows holding a token through
`masked_ip = ANY(...)`: on a table of any size an index lookup. A superuser created an operator class whose btree
comparison lied only while a setting of his own session was on, built `user_logins_masked_ip` with it (dropping
the shipped index of migration 0003) and, with the lie on, deleted and re-inserted B's row exactly as it was: its
index entry landed where no lookup of its token looks, and `erase --user-id A` erased the value A shares with B with
no word of B, every row verifying; `audit login-rows` (by day and by token) exited 0. A49-2b: the same class on an
index he added on user_id hid one of A's rows from the query collecting A's tokens. The commands now refuse while an
index of user_logins or user_login_manifests is not a plain column index of PostgreSQL's own pieces
(tokenvault_cli/row_indexes.py) - and a site's own plain index is no finding.

Real SQS, the stack's ETL, the vault service, OpenBao and PostgreSQL; the `tokenvault` console script.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.cli.conftest import CliStack
from tests.cli.erase_logins import RUN, erase, load, people, revealed, tokens_of

LYING_CLASS = """
CREATE OR REPLACE FUNCTION public.a49_cmp(a text, b text) RETURNS int4 LANGUAGE sql IMMUTABLE STRICT AS $$
  SELECT CASE WHEN current_setting('a49.lie', true) = 'on' THEN 1 ELSE pg_catalog.bttextcmp(a, b) END $$;
CREATE OPERATOR FAMILY public.a49_ops USING btree;
CREATE OPERATOR CLASS public.a49_text_ops FOR TYPE text USING btree FAMILY public.a49_ops AS
  OPERATOR 1 pg_catalog.<(text, text), OPERATOR 2 pg_catalog.<=(text, text), OPERATOR 3 pg_catalog.=(text, text),
  OPERATOR 4 pg_catalog.>=(text, text), OPERATOR 5 pg_catalog.>(text, text), FUNCTION 1 public.a49_cmp(text, text);
"""
LYING_IP_INDEX = """
DROP INDEX public.user_logins_masked_ip;
CREATE INDEX user_logins_masked_ip ON public.user_logins (masked_ip public.a49_text_ops);
"""
SITES_OWN_INDEX = 'CREATE INDEX user_logins_a49_sites_own ON public.user_logins (user_id COLLATE "C", create_date)'
UNDONE = """
DROP INDEX IF EXISTS public.user_logins_masked_ip;
DROP INDEX IF EXISTS public.user_logins_a49_user_id;
DROP INDEX IF EXISTS public.user_logins_a49_sites_own;
DROP OPERATOR FAMILY IF EXISTS public.a49_ops USING btree CASCADE;
DROP FUNCTION IF EXISTS public.a49_cmp(text, text);
CREATE INDEX IF NOT EXISTS user_logins_masked_ip ON public.user_logins (masked_ip);
"""
REFUSED = "report it to the security team"


@pytest.fixture(autouse=True)
def _undone_after(cli_stack: CliStack) -> Iterator[None]:
    yield
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"], autocommit=True) as owner:
        owner.execute(UNDONE)
        owner.execute("DELETE FROM user_logins WHERE event_id LIKE %s", (f"e3-{RUN}-%",))
        owner.execute("ANALYZE public.user_logins")


def _filled(owner: psycopg.Connection[tuple[object, ...]], user: str) -> None:
    """A table of a production's size: lookups by token go through the index (filler rows dated 2020)."""
    owner.execute(
        "INSERT INTO user_logins (user_id, masked_ip, masked_device_id, event_id, create_date)"
        " SELECT " + user + ", 'zz-fill-' || g, 'zz-fill-' || g, %s || g, DATE '2020-01-01'"
        " FROM generate_series(1, 20000) g",
        (f"e3-{RUN}-fill-",),
    )


def _reinserted_with_the_lie_on(owner: psycopg.Connection[tuple[object, ...]], where: str, arg: str) -> None:
    """The rows `where` selects deleted and inserted back byte for byte, the lie on: their index entries misplaced."""
    with owner.transaction():
        owner.execute("SET LOCAL session_replication_role = replica")
        owner.execute("SELECT set_config('a49.lie', 'on', true)")
        owner.execute(f"CREATE TEMP TABLE a49_rows ON COMMIT DROP AS SELECT * FROM user_logins WHERE {where}", (arg,))
        owner.execute("DELETE FROM user_logins WHERE event_id IN (SELECT event_id FROM a49_rows)")
        owner.execute("INSERT INTO user_logins SELECT * FROM a49_rows")
    owner.execute("ANALYZE public.user_logins")


def test_a49_2_a_lying_index_on_masked_ip_is_refused_and_the_other_persons_value_stays(cli_stack: CliStack) -> None:
    tag_a, tag_b = uuid.uuid4().hex, uuid.uuid4().hex
    (ip, dev_a), (_, dev_b) = people(tag_a), people(tag_b)
    person_a, person_b = f"a49-a-{tag_a[:8]}", f"a49-b-{tag_b[:8]}"
    load(cli_stack, [(person_b, ip, dev_b)])  # B's login from the shared address, signed by the ETL
    load(cli_stack, [(person_a, ip, dev_a)])  # A's, another batch
    tokens_a, tokens_b = tokens_of(cli_stack, person_a), tokens_of(cli_stack, person_b)
    assert tokens_a[0] == tokens_b[0]  # one token for the shared ip
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"], autocommit=True) as owner:
        _filled(owner, "'fill'")
        owner.execute(SITES_OWN_INDEX)  # a site's own plain index of built-in pieces: no finding
        owner.execute("ANALYZE public.user_logins")
    code, out, err = erase(cli_stack, *tokens_a, "--user-id", person_a)
    assert code == 1 and "1 other person" in err and "user_logins_a49" not in err, (
        out + err
    )  # counted, B named: as designed

    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"], autocommit=True) as owner:
        owner.execute(LYING_CLASS + LYING_IP_INDEX)
        _reinserted_with_the_lie_on(owner, "user_id = %s", person_b)
        seen = owner.execute("SELECT count(*) FROM user_logins WHERE masked_ip = %s", (tokens_a[0],)).fetchone()
        owner.execute("SET enable_indexscan = off; SET enable_bitmapscan = off")
        scanned = owner.execute("SELECT count(*) FROM user_logins WHERE masked_ip = %s", (tokens_a[0],)).fetchone()
    assert (seen, scanned) == ((1,), (2,))  # the index hides B's row from a lookup: the attack stands

    code, out, err = erase(cli_stack, *tokens_a, "--user-id", person_a)
    today = datetime.date.today().isoformat()
    audit_day = cli_stack.as_("security", "audit", "login-rows", "--since", today, "--until", today)
    audit_token = cli_stack.as_("security", "audit", "login-rows", "--token", tokens_a[0])
    print(f"A49-2: erase exit {code}: {err[-700:]}\naudit login-rows (today): {audit_day.stderr[-500:]}")
    query = f"SELECT user_id, masked_ip FROM user_logins WHERE user_id COLLATE \"C\" = '{person_a}'"
    reveal = cli_stack.as_(
        "fraud-investigator", "reveal", "--query", query, "--verify-rows", "--purpose", "INC-A49-2", "-o", "csv"
    )
    assert reveal.returncode == 1 and "index public.user_logins_masked_ip" in reveal.stderr, reveal.stderr
    assert ip not in reveal.stdout, reveal.stdout
    assert code == 1, out + err
    assert "index public.user_logins_masked_ip has operator class a49_text_ops" in err and REFUSED in err, err
    assert "nothing was erased" in err, err
    assert revealed(cli_stack, tokens_b) == [ip, dev_b]  # B's values, and A's, still there
    assert revealed(cli_stack, tokens_a) == [ip, dev_a]
    for audit in (audit_day, audit_token):
        assert audit.returncode == 1, audit.stdout + audit.stderr
        assert "index public.user_logins_masked_ip has operator class a49_text_ops" in audit.stderr, audit.stderr
    assert "user_logins_a49_sites_own" not in audit_day.stderr  # the site's own plain index: no finding


def test_a49_2b_a_lying_index_added_on_user_id_is_refused_though_the_query_collecting_the_tokens_missed_a_row(
    cli_stack: CliStack,
) -> None:
    """The same operator class on an index of user_id the owner adds (none is shipped): the query that collects the
    person's tokens (`WHERE user_id COLLATE "C" = ...`, as the README advises) misses one of A's rows - the officer
    cannot tell - but the erasure of what it returned is refused, naming the index, so A's other values are not left
    revealable unawares."""
    tag, tag2 = uuid.uuid4().hex, uuid.uuid4().hex
    (ip, dev), (ip2, dev2) = people(tag), people(tag2)
    person = f"a49-c-{tag[:8]}"
    load(cli_stack, [(person, ip, dev)])
    load(cli_stack, [(person, ip2, dev2)])  # A's second login, another batch
    collect = f"SELECT DISTINCT masked_ip, masked_device_id FROM user_logins WHERE user_id COLLATE \"C\" = '{person}'"
    hidden_ip = next(str(t) for (t, _) in cli_stack.analyst_query(collect) if revealed(cli_stack, (str(t),)) == [ip2])
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"], autocommit=True) as owner:
        _filled(owner, "'zz-fill-' || g")
        owner.execute(LYING_CLASS)
        owner.execute(
            'CREATE INDEX user_logins_a49_user_id ON public.user_logins (user_id COLLATE "C" public.a49_text_ops)'
        )
        _reinserted_with_the_lie_on(owner, "masked_ip = %s", hidden_ip)
    collected = cli_stack.analyst_query(collect)
    assert len(collected) == 1  # the attack stands: the officer's query sees one of A's two rows
    tokens = [str(t) for row in collected for t in row]
    code, out, err = erase(cli_stack, *tokens, "--user-id", person)
    print(f"A49-2b: erase exit {code}: {err[-500:]}")
    assert code == 1 and "index public.user_logins_a49_user_id has operator class a49_text_ops" in err, out + err
    assert REFUSED in err and "nothing was erased" in err, err
    assert "NOT_FOUND" not in revealed(cli_stack, tuple(tokens))
