"""`reveal --query`: an analyst's SQL, its token columns revealed in batches within the rate limit."""

from __future__ import annotations

import csv
import io
import json

import psycopg

from tests.cli.conftest import EVENTS, CliStack
from tokenvault_client import type_of_token

ALL_ROWS = "SELECT event_id, user_id, masked_ip, masked_device_id FROM user_logins WHERE event_id LIKE 'gen-17-%'"


def audit_rows(stack: CliStack, purpose: str) -> list[tuple[str, int]]:
    with psycopg.connect(stack.env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(
            "SELECT outcome, item_count FROM vault.audit_log WHERE purpose = %s AND action = 'detokenize' ORDER BY id",
            (purpose,),
        ).fetchall()
    return [(str(o), int(n)) for o, n in rows]


def test_every_token_of_several_thousand_rows_is_revealed_within_the_rate_limit(cli_stack: CliStack) -> None:
    done = cli_stack.as_("analyst", "reveal", "--purpose", "CASE-200", "--query", ALL_ROWS, "-o", "json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) == EVENTS
    sent = {e.event_id: json.loads(e.body) for e in cli_stack.events}
    for row in rows:
        event = sent[row["event_id"]]
        assert row["masked_ip"] == event["ip"]  # the analyst's policy: ip plain
        assert row["masked_device_id"] == "***-**-" + event["device_id"][-4:]  # device id masked
    distinct = {token for r in cli_stack.analyst_query(ALL_ROWS) for token in r[2:]}
    assert len(distinct) > 2000  # more than the analyst's burst: the run had to wait for the rate limit
    assert f"revealed {len(distinct)} distinct token(s)" in done.stderr and "waited" in done.stderr
    audited = audit_rows(cli_stack, "CASE-200")
    assert sum(n for outcome, n in audited if outcome.startswith("ok")) == len(distinct)  # each token once
    refused = [outcome for outcome, _ in audited if not outcome.startswith("ok")]
    assert all(outcome == "refused: RateLimited" for outcome in refused) and len(refused) <= 3


def test_csv_with_tokens_keeps_each_token_beside_its_value(cli_stack: CliStack) -> None:
    sql = ALL_ROWS + " ORDER BY event_id LIMIT 5"
    done = cli_stack.as_("fraud-investigator", "reveal", "-p", "CASE-201", "-q", sql, "--with-tokens", "-o", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert list(rows[0]) == [
        "event_id", "user_id", "masked_ip_token", "masked_ip", "masked_device_id_token", "masked_device_id"
    ]  # fmt: skip
    sent = {e.event_id: json.loads(e.body) for e in cli_stack.events}
    for row in rows:
        assert type_of_token(row["masked_ip_token"]) and row["masked_ip"] == sent[row["event_id"]]["ip"]
        assert row["masked_device_id"] == sent[row["event_id"]]["device_id"]  # plain for the investigator


def test_a_result_without_tokens_is_printed_and_nothing_is_sent_to_the_vault(cli_stack: CliStack) -> None:
    done = cli_stack.as_("analyst", "reveal", "-p", "CASE-202", "-q", "SELECT count(*) AS n FROM user_logins")
    # Rows other tests loaded into the stack before this one count too (their order is not fixed: parallel runs).
    ((count,),) = cli_stack.analyst_query("SELECT count(*) FROM user_logins")
    assert done.returncode == 0 and "nothing to reveal" in done.stderr and str(count) in done.stdout
    assert int(str(count)) >= EVENTS
    assert audit_rows(cli_stack, "CASE-202") == []


def test_the_query_runs_read_only_and_errors_say_why(cli_stack: CliStack) -> None:
    write = cli_stack.as_("analyst", "reveal", "-p", "CASE-203", "-q", "DELETE FROM user_logins RETURNING masked_ip")
    assert write.returncode == 1 and "the query failed" in write.stderr and "read-only" in write.stderr
    assert len(cli_stack.analyst_query("SELECT event_id FROM user_logins")) >= EVENTS
    vault_table = cli_stack.as_("analyst", "reveal", "-p", "CASE-203", "-q", "SELECT token FROM vault.tokens")
    assert vault_table.returncode == 1 and "permission denied" in vault_table.stderr


def test_rows_too_wide_for_80_columns_are_blocks_each_value_whole(cli_stack: CliStack) -> None:
    """Walk48, W48-11: folded into 80 columns the table cut every user id in two ("e7bbaefc-8f3d-497f-a6b0-da0" over
    "ab98f5dbe"), so copying one gave half an id; as `audit who-saw` does, each row is then a block of its fields."""
    sql = "SELECT user_id, masked_ip, masked_device_id, event_id FROM user_logins WHERE event_id LIKE 'gen-17-%'"
    sql += " ORDER BY event_id LIMIT 3"
    asked = ("--stack", str(cli_stack.state_dir), "--as", "analyst", "reveal", "-p", "CASE-203", "-q", sql)
    narrow = cli_stack.run(*asked, env={"COLUMNS": "80"})
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert "-[ 1 of 3 ]" in lines[0] and max(len(line.rstrip()) for line in lines) <= 80, narrow.stdout
    for (user_id,) in cli_stack.analyst_query(sql.replace("user_id, masked_ip, masked_device_id, event_id", "user_id")):
        assert any(line.split() == ["user_id", str(user_id)] for line in lines), (user_id, narrow.stdout)
    wide = cli_stack.run(*asked)  # 200 columns: the table, as before
    assert wide.returncode == 0 and "-[ 1 of 3 ]" not in wide.stdout and "user_id" in wide.stdout.splitlines()[0]
