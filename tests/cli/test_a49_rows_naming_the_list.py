"""Attack 49, A49-4: rows the ETL's role inserts naming P's signed list (holding no token) trip erase's list bound -
now the refusal says which list, by how many rows, and `audit login-rows --token` counts the rows naming each list.

A48-2's Left covers rows HOLDING P's token past the bound (counted by list by `--token`). Rows that only NAME P's batch
list (row_manifest = P's list, no token, no create_date) are read by the whole-list read (LIST_ROWS_SQL: listed rows +
--max-rows-checked at most): past it erase refused "name more signed lists than can be verified", and `--token`
grouped only rows holding the token - P's one row under P's list - so the planted rows were named nowhere. The ETL
knows P's list id (it made it).

Real SQS, the stack's ETL, the vault service, OpenBao and PostgreSQL; the `tokenvault` console script.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.cli.conftest import CliStack
from tests.cli.erase_logins import RUN, erase, load, people, revealed, tokens_of

PLANTED = 10_002


@pytest.fixture(autouse=True)
def _rows_removed_after(cli_stack: CliStack) -> Iterator[None]:
    yield
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as conn:
        conn.execute("DELETE FROM user_logins WHERE event_id LIKE %s", (f"e3-{RUN}-%",))


def test_a49_4_rows_naming_the_persons_list_are_named_by_list_in_the_refusal_and_the_token_audit(
    cli_stack: CliStack,
) -> None:
    tag = uuid.uuid4().hex
    ip, dev = people(tag)
    person = f"a49-l-{tag[:8]}"
    load(cli_stack, [(person, ip, dev)])
    tokens = tokens_of(cli_stack, person)
    ((manifest,),) = cli_stack.analyst_query(f"SELECT row_manifest FROM user_logins WHERE user_id = '{person}'")
    ((listed,),) = cli_stack.analyst_query(
        f"SELECT length(digests) / 32 FROM user_login_manifests WHERE manifest_id = '{manifest}'"
    )
    listing = int(str(listed))
    with psycopg.connect(cli_stack.env["PG_ETL_DSN"]) as etl:  # the ETL's identity: one INSERT ... SELECT
        etl.execute(
            "INSERT INTO public.user_logins (user_id, event_id, row_manifest)"
            " SELECT NULL, %s || g, %s FROM generate_series(1, %s) g",
            (f"e3-{RUN}-named-{tag[:8]}-", manifest, PLANTED),
        )
    naming = listing + PLANTED
    code, out, err = erase(cli_stack, *tokens, "--user-id", person)
    flat = " ".join(err.split())
    print(f"A49-4: erase exit {code}: {flat[-900:]}")
    assert code == 1 and f"list {manifest}: {naming:,} rows name it, it lists {listing:,}" in flat, out + err
    assert f"{PLANTED:,} more rows of user_logins name the signed lists" in flat and "may be planted" in flat, flat
    assert f"--max-rows-checked {PLANTED} reads them all" in flat and "audit login-rows --token TOKEN" in flat, flat
    audit = cli_stack.as_("security", "audit", "login-rows", "--token", tokens[0], "-o", "csv")
    said = " ".join(audit.stderr.split())
    print(f"A49-4: audit login-rows --token exit {audit.returncode}:\n{audit.stdout[-600:]}\n{said[-600:]}")
    assert audit.returncode == 2, audit.stdout + audit.stderr  # nothing verified
    assert audit.stdout.splitlines()[0] == "row_manifest,rows,no_create_date,rows_naming_the_list,listed"
    assert f"{manifest},1,0,{naming},{listing}" in audit.stdout.splitlines(), audit.stdout
    assert f"list {manifest}: {naming:,} rows name it, it lists {listing:,}" in said, said
    assert person not in audit.stdout + audit.stderr and ip not in audit.stdout + audit.stderr
    code, out, err = erase(cli_stack, *tokens, "--user-id", person, "--max-rows-checked", str(PLANTED))
    flat = " ".join(err.split())
    assert code == 1 and f"--accepting-unverified-rows {PLANTED} erases anyway" in flat, out + err
    assert revealed(cli_stack, tokens) == [ip, dev]
