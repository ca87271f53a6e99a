"""Attack 50, A50-2: a list "signed" by a key version the keys file lacks no longer blocks a person's erasure.

A49-3's fix took such a version as "the keys file is stale, refresh it" (exit 2, no override) when it is newer than
the file's newest and the list's signed_at is after the file was read and at most 5 minutes ahead of the officer's
clock. signed_at is the inserter's to set: the ETL's role dated its `vault:v99:` list 4 minutes ahead, or planted one
again after each refresh - erase stayed refused as a stale file right after a refresh, and --accepting-unverified-rows
did not apply. Now signed_at is judged against the database's clock, read after the lists (no skew): a list dated
ahead of it does not verify; and a list planted after the refresh, still refused as a stale file by default (named),
is covered by --accepting-unverified-rows N (each row one more other person).

Real SQS, the stack's ETL, the vault service, OpenBao and PostgreSQL; the `tokenvault` console script.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.cli.conftest import CliStack
from tests.cli.erase_logins import RUN, erase, load, people, revealed, tokens_of
from tests.cli.test_a49_unknown_key_version_plant import TAMPERING, _plant


@pytest.fixture(autouse=True)
def _rows_removed_after(cli_stack: CliStack) -> Iterator[None]:
    yield
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as conn:
        conn.execute("DELETE FROM user_logins WHERE event_id LIKE %s", (f"e3-{RUN}-%",))


def _refreshed(stack: CliStack) -> None:
    refresh = stack.as_("security", "login-row-keys", "refresh")
    assert refresh.returncode == 0, refresh.stdout + refresh.stderr


def test_a50_2_a_list_dated_four_minutes_ahead_does_not_verify_after_the_refresh(cli_stack: CliStack) -> None:
    tag = uuid.uuid4().hex
    ip, dev = people(tag)
    person = f"a50-k-{tag[:8]}"
    load(cli_stack, [(person, ip, dev)])
    tokens = tokens_of(cli_stack, person)
    with psycopg.connect(cli_stack.env["PG_ETL_DSN"]) as etl:
        (ahead,) = etl.execute("SELECT (now() + interval '4 minutes')::text").fetchone()  # type: ignore[misc]
    planted, manifest = _plant(cli_stack, tokens[0], tag, signed_at=ahead)
    _refreshed(cli_stack)
    code, out, err = erase(cli_stack, *tokens, "--user-id", person)
    print(f"A50-2: after the refresh, erase: exit {code}: {err[-700:]}")
    assert code == 1 and TAMPERING in err and f"event {planted} (list {manifest})" in err, out + err
    assert "--accepting-unverified-rows 1 erases anyway" in err and "refresh the file" not in err, err
    audit = cli_stack.as_("security", "audit", "login-rows", "--token", tokens[0], "-o", "csv")
    assert audit.returncode == 1, audit.stdout + audit.stderr
    assert [x for x in audit.stdout.splitlines() if x.startswith(f"{planted},") and "database's clock" in x], audit
    assert revealed(cli_stack, tokens) == [ip, dev]
    code, out, err = erase(
        cli_stack, *tokens, "--user-id", person, "--accepting-unverified-rows", "1", "--including-other-people", "1"
    )
    print(f"A50-2: with the override: exit {code}: {err[-300:]}")
    assert code == 0 and out.count("erased") == 2, out + err
    assert revealed(cli_stack, tokens) == ["NOT_FOUND", "NOT_FOUND"]


def test_a50_2_a_list_planted_after_the_refresh_is_refused_named_and_overridable(cli_stack: CliStack) -> None:
    tag = uuid.uuid4().hex
    ip, dev = people(tag)
    person = f"a50-r-{tag[:8]}"
    load(cli_stack, [(person, ip, dev)])
    tokens = tokens_of(cli_stack, person)
    _refreshed(cli_stack)
    planted, manifest = _plant(cli_stack, tokens[0], tag)  # the default signed_at: after the refresh
    code, out, err = erase(cli_stack, *tokens, "--user-id", person)
    print(f"A50-2: planted after the refresh, erase: exit {code}: {err[-700:]}")
    assert code == 2 and "refresh the file" in err and f"event {planted} (list {manifest})" in err, out + err
    assert "--accepting-unverified-rows 1 erases anyway" in err, err  # fail-closed by default, the override named
    code, out, err = erase(
        cli_stack, *tokens, "--user-id", person, "--accepting-unverified-rows", "2", "--including-other-people", "1"
    )
    assert code == 2 and "--accepting-unverified-rows 2 does not match" in err, out + err
    assert revealed(cli_stack, tokens) == [ip, dev]
    code, out, err = erase(cli_stack, *tokens, "--user-id", person, "--accepting-unverified-rows", "1")
    assert code == 1 and "--including-other-people" in err, out + err  # the planted row is one more other person
    assert revealed(cli_stack, tokens) == [ip, dev]
    code, out, err = erase(
        cli_stack, *tokens, "--user-id", person, "--accepting-unverified-rows", "1", "--including-other-people", "1"
    )
    print(f"A50-2: planted after the refresh, with the override: exit {code}: {err[-300:]}")
    assert code == 0 and out.count("erased") == 2, out + err
    assert revealed(cli_stack, tokens) == ["NOT_FOUND", "NOT_FOUND"]
