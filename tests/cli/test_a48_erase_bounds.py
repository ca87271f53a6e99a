"""Attack 48, A48-2: the ETL's database role no longer blocks a person's erasure through erase's read bounds unseen.

Before: one row the ETL's role inserted holding P's token and naming an unsigned 64 MiB list of its own made every
`erase` of P's values refuse "ask for fewer tokens at once" before verifying anything, and `audit login-rows` of that
day refuse "give a shorter range"; 10,001 unsigned rows holding P's token (no create_date) did the same, and no range
listed them. Now: user_login_manifests refuses a list larger than one ETL batch (migration 0071), and erase reads no
such list even where the owner dropped that check - the row naming it does not verify (A47-3's
--accepting-unverified-rows goes on); past the row bound the refusal says the rows may be planted and to report it,
and `audit login-rows --token` counts them by the list they name.

Real SQS, the stack's ETL, the vault service, OpenBao and PostgreSQL; the `tokenvault` console script.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.cli.conftest import CliStack
from tests.cli.erase_logins import RUN, erase, load, people, revealed

BIG_LIST = 64 * 1024 * 1024 + 32
"""One 32-byte digest more than the lists erase reads in all (MAX_LIST_BYTES)."""
ONE_BATCH = "user_login_manifests_one_batch"


@pytest.fixture(autouse=True)
def _planted_removed_after(cli_stack: CliStack) -> Iterator[None]:
    """This module's rows and lists removed, the list bound put back (the owner's login; the ETL cannot delete)."""
    yield
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as conn:
        conn.execute("DELETE FROM user_logins WHERE event_id LIKE %s", (f"e3-{RUN}-a48%",))
        conn.execute("DELETE FROM user_login_manifests WHERE signature = 'vault:v1:a48'")
        conn.execute(
            f"ALTER TABLE user_login_manifests DROP CONSTRAINT IF EXISTS {ONE_BATCH};"
            f" ALTER TABLE user_login_manifests ADD CONSTRAINT {ONE_BATCH} CHECK (length(digests) <= 32000)"
        )


def _person(cli_stack: CliStack, letter: str) -> tuple[str, str, str, str]:
    tag = uuid.uuid4().hex
    ip, dev = people(tag)
    person = f"a48-{letter}-{tag[:8]}"
    load(cli_stack, [(person, ip, dev)])
    ((ip_token, _dev),) = cli_stack.analyst_query(
        f"SELECT masked_ip, masked_device_id FROM user_logins WHERE user_id = '{person}'"
    )
    return person, ip, str(ip_token), tag


def test_a48_2_a_list_larger_than_one_batch_is_refused_and_never_read_its_row_does_not_verify(
    cli_stack: CliStack,
) -> None:
    person, _ip, ip_token, tag = _person(cli_stack, "p")
    today = datetime.date.today()
    with psycopg.connect(cli_stack.env["PG_ETL_DSN"]) as etl, pytest.raises(psycopg.errors.CheckViolation):
        etl.execute(  # the ETL's own role: the table takes no list larger than one of its batches
            "INSERT INTO public.user_login_manifests (manifest_id, digests, signature) VALUES (%s, %s, 'vault:v1:a48')",
            (uuid.uuid4(), bytes(32_032)),
        )
    big, planted = uuid.uuid4(), f"e3-{RUN}-a48-{tag[:8]}"
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as owner:  # the owner may drop the check: erase still holds
        owner.execute(f"ALTER TABLE user_login_manifests DROP CONSTRAINT {ONE_BATCH}")
        owner.execute(
            "INSERT INTO public.user_login_manifests (manifest_id, digests, signature) VALUES (%s, %s, 'vault:v1:a48')",
            (big, bytes(BIG_LIST)),
        )
        owner.execute(
            "INSERT INTO public.user_logins (user_id, masked_ip, masked_device_id, create_date, event_id, row_manifest)"
            " VALUES (%s, %s, NULL, %s, %s, %s)",
            (person, ip_token, today, planted, big),
        )

    code, out, err = erase(cli_stack, ip_token, "--user-id", person)
    assert code == 1 and "1 row(s) of user_logins holding these tokens do not verify" in err, out + err
    assert f"event {planted} (list {big})" in err and "fewer tokens" not in err, err
    audit = cli_stack.as_(
        "security", "audit", "login-rows", "--since", today.isoformat(), "--until", today.isoformat(), "-o", "csv"
    )
    assert audit.returncode == 1 and f"{planted},{big},does not verify," in audit.stdout, audit.stdout + audit.stderr
    by_token = cli_stack.as_("security", "audit", "login-rows", "--token", ip_token, "-o", "csv")
    assert by_token.returncode == 1 and f"{planted},{big},does not verify," in by_token.stdout, (
        by_token.stdout + by_token.stderr
    )
    assert "rows holding the tokens: 2;" in by_token.stderr, by_token.stderr
    ((device_token,),) = cli_stack.analyst_query(  # the person's loaded row's, kept (attack 50: named as kept)
        f"SELECT masked_device_id FROM user_logins WHERE user_id = '{person}' AND masked_device_id IS NOT NULL"
    )
    kept = ("--leaving-out", str(device_token))
    code, out, err = erase(
        cli_stack,
        ip_token,
        "--user-id",
        person,
        "--accepting-unverified-rows",
        "1",
        "--including-other-people",
        "1",
        *kept,
    )
    assert code == 0 and out.count("erased") == 1, out + err
    assert revealed(cli_stack, (ip_token,)) == ["NOT_FOUND"]


def test_a48_2_past_the_row_bound_the_refusal_says_planted_and_the_audit_counts_them_by_token(
    cli_stack: CliStack,
) -> None:
    person, ip, ip_token, tag = _person(cli_stack, "q")
    with (
        psycopg.connect(cli_stack.env["PG_ETL_DSN"]) as etl,
        etl.cursor().copy(
            "COPY public.user_logins (user_id, masked_ip, masked_device_id, create_date, event_id) FROM STDIN"
        ) as copy,
    ):
        for n in range(10_001):
            copy.write_row((person, ip_token, None, None, f"e3-{RUN}-a48q-{tag[:8]}-{n}"))
    code, out, err = erase(cli_stack, ip_token, "--user-id", person, "--accepting-unsigned-rows", "10001")
    flat = " ".join(err.split())
    assert code == 1 and "10,002 rows of user_logins hold these tokens" in flat, out + err
    assert "(--max-rows-checked 10,000)" in flat and "may be rows planted to block it" in flat, err
    assert "report it to the security team" in flat and "audit login-rows --token TOKEN" in flat, err
    assert revealed(cli_stack, (ip_token,)) == [ip]
    audit = cli_stack.as_("security", "audit", "login-rows", "--token", ip_token, "-o", "csv")
    assert audit.returncode == 2, audit.stdout + audit.stderr  # nothing verified (walk47, W47-19)
    assert ",10001,10001,," in audit.stdout.splitlines(), audit.stdout  # no list, no create_date: 10,001 rows
    assert "may be planted to block erasures" in " ".join(audit.stderr.split()), audit.stderr
    assert person not in audit.stdout + audit.stderr and ip not in audit.stdout + audit.stderr
