"""Walk47 W47-18, W47-19: a value genuinely held by more rows than the bound can be erased; a busy day audited.

Before: `erase`, `reveal --verify-rows` and `audit login-rows` refused past 10,000 rows holding the tokens (or of
the range), and no option lifted the bound: a carrier's NAT address shared by 10,050 people could never be erased
("ask for fewer tokens at once", with one token), and the audit of such a day exited 1 - as a row that does not
verify - saying "give a shorter range" of one day. Now the refusal says how many rows, that they may be planted
(A48-2), and which --max-rows-checked verifies them all; `audit login-rows` exits 2 when it checked nothing.

The rows are signed as the ETL signs them (Transit's ed25519 login-rows key, lists of one batch, 1,000 rows) and
written with the owner's login: 10,050 events through SQS and the ETL would take minutes. Real OpenBao, SQS,
PostgreSQL, vault service and ETL; the `tokenvault` console script.
"""

from __future__ import annotations

import base64
import datetime
import resource
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import hvac
import psycopg
import pytest

from tests.cli.conftest import CliStack
from tests.cli.erase_logins import RUN, erase, load, people, revealed
from tokenvault_common.login_row_signatures import LOGIN_ROWS_KEY, MAX_ROWS_PER_LIST, row_digest, signed_input

OTHERS = 10_049
"""Other people behind the person's address: with the person's row, 10,050 rows hold the token."""
BOUND_REFUSED = "more than are verified against the ETL's signature (--max-rows-checked 10,000)"


@pytest.fixture(autouse=True)
def _signed_rows_removed_after(cli_stack: CliStack) -> Iterator[list[uuid.UUID]]:
    """This module's rows and the lists signed for them removed (the owner's login)."""
    lists: list[uuid.UUID] = []
    yield lists
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as conn:
        conn.execute("DELETE FROM user_logins WHERE event_id LIKE %s", (f"e3-{RUN}-w47b%",))
        conn.execute("DELETE FROM user_login_manifests WHERE manifest_id = ANY(%s)", (lists,))


def _sign_rows(stack: CliStack, rows: list[tuple[str, str, str, datetime.date]], lists: list[uuid.UUID]) -> None:
    """Write (event id, user id, ip token, day) rows signed as the ETL signs a batch: one list a 1,000 rows."""
    env = stack.env
    root = hvac.Client(url=env["VAULT_ADDR"], token=Path(env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    with psycopg.connect(env["PG_ADMIN_DSN"]) as owner:
        for start in range(0, len(rows), MAX_ROWS_PER_LIST):
            batch = rows[start : start + MAX_ROWS_PER_LIST]
            manifest_id = uuid.uuid4()
            digests = b"".join(row_digest(e, u, ip, None, day) for e, u, ip, day in batch)
            message = base64.b64encode(signed_input(manifest_id, digests)).decode()
            signed = root.adapter.post(f"/v1/transit/sign/{LOGIN_ROWS_KEY}", json={"input": message})
            owner.execute(
                "INSERT INTO public.user_login_manifests (manifest_id, digests, signature) VALUES (%s, %s, %s)",
                (manifest_id, digests, signed["data"]["signature"]),
            )
            lists.append(manifest_id)
            with owner.cursor().copy(
                "COPY public.user_logins (event_id, user_id, masked_ip, masked_device_id, create_date, row_manifest)"
                " FROM STDIN"
            ) as copy:
                for event_id, user_id, ip_token, day in batch:
                    copy.write_row((event_id, user_id, ip_token, None, day, manifest_id))


def _shared_address(cli_stack: CliStack, lists: list[uuid.UUID]) -> tuple[str, str, str]:
    """A person loaded by the ETL, and 10,049 other people's signed rows holding the same address token."""
    tag = uuid.uuid4().hex
    ip, device = people(tag)
    person = f"w47b-{tag[:8]}"
    load(cli_stack, [(person, ip, device)])
    ((ip_token,),) = cli_stack.analyst_query(f"SELECT masked_ip FROM user_logins WHERE user_id = '{person}'")
    today = datetime.date.today()
    others = [(f"e3-{RUN}-w47b-{tag[:8]}-{n}", f"w47b-nat-{tag[:8]}-{n}", str(ip_token), today) for n in range(OTHERS)]
    _sign_rows(cli_stack, others, lists)
    return person, ip, str(ip_token)


def test_w47_18_a_value_held_by_more_rows_than_the_bound_is_erased_once_the_officer_raises_it(
    cli_stack: CliStack, _signed_rows_removed_after: list[uuid.UUID]
) -> None:
    person, ip, ip_token = _shared_address(cli_stack, _signed_rows_removed_after)
    including = ("--including-other-people", str(OTHERS))
    code, out, err = erase(cli_stack, ip_token, "--user-id", person, *including)
    flat = " ".join(err.split())
    assert code == 1 and f"{OTHERS + 1:,} rows of user_logins hold these tokens" in flat, out + err
    assert BOUND_REFUSED in flat and f"give --max-rows-checked {OTHERS + 1} to verify them all" in flat, err
    assert "may be rows planted to block it" in flat and "fewer tokens" not in flat, err
    assert revealed(cli_stack, (ip_token,)) == [ip]

    query = f"SELECT masked_ip FROM user_logins WHERE user_id = '{person}'"
    reveal = ("reveal", "--purpose", "INC-W47-18", "--query", query, "--verify-rows", "-o", "csv")
    refused = cli_stack.as_("fraud-investigator", *reveal)
    assert refused.returncode == 1 and BOUND_REFUSED in " ".join(refused.stderr.split()), refused.stderr
    shown = cli_stack.as_("fraud-investigator", *reveal, "--max-rows-checked", "20000")
    assert shown.returncode == 0 and ip in shown.stdout, shown.stdout + shown.stderr

    ((device_token,),) = cli_stack.analyst_query(f"SELECT masked_device_id FROM user_logins WHERE user_id = '{person}'")
    kept = ("--leaving-out", str(device_token))  # the person's device token, not erased here (attack 50: named)
    started = time.monotonic()
    code, out, err = erase(cli_stack, ip_token, "--user-id", person, *including, "--max-rows-checked", "20000", *kept)
    took = time.monotonic() - started
    assert code == 0 and out.count("erased") == 1, out + err
    assert revealed(cli_stack, (ip_token,)) == ["NOT_FOUND"]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"\nW47-18 erase of one token held by {OTHERS + 1:,} signed rows: {took:.1f} s, max RSS {after.ru_maxrss} KiB"
    )


def test_w47_19_audit_login_rows_past_the_bound_exits_2_and_checks_them_with_max_rows_checked(
    cli_stack: CliStack, _signed_rows_removed_after: list[uuid.UUID]
) -> None:
    _person, _ip, ip_token = _shared_address(cli_stack, _signed_rows_removed_after)
    today = datetime.date.today().isoformat()
    day = cli_stack.as_("security", "audit", "login-rows", "--since", today, "--until", today, "-o", "csv")
    flat = " ".join(day.stderr.split())
    assert day.returncode == 2 and "nothing checked" in flat and "--max-rows-checked N" in flat, day.stderr
    by_token = cli_stack.as_("security", "audit", "login-rows", "--token", ip_token, "-o", "csv")
    flat = " ".join(by_token.stderr.split())
    assert by_token.returncode == 2 and f"{OTHERS + 1:,} rows of user_logins hold these tokens" in flat, flat
    checked = cli_stack.as_(
        "security", "audit", "login-rows", "--token", ip_token, "--max-rows-checked", "20000", "-o", "csv"
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"rows holding the tokens: {OTHERS + 1}; verify: {OTHERS + 1};" in checked.stderr, checked.stderr
    with_range = ("audit", "login-rows", "--since", today, "--until", today, "--max-rows-checked", "1000000")
    whole_day = cli_stack.as_("security", *with_range, "-o", "csv")
    assert whole_day.returncode in (0, 1) and "nothing checked" not in whole_day.stderr, whole_day.stderr
