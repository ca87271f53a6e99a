"""Logins loaded through the stack's ETL for the `tokenvault erase` tests, and what they reveal and erase.

Shared by the erase tests of tests/cli: every event id loaded here starts with `e3-RUN-` (RUN one per session), so
`remove_loaded_rows` (the `loaded_rows_removed` fixture of conftest.py) takes them out of user_logins again.
"""

from __future__ import annotations

import time
import uuid

import psycopg

from devstack.events import OutgoingEvent, send_events
from devstack.sqs import identity_key, sqs_client
from tests.cli.conftest import CliStack
from tests.malformed_samples import body

RUN = uuid.uuid4().hex[:10]
"""Every event id loaded here starts with `e3-RUN-`."""


def remove_loaded_rows(stack: CliStack, prefix: str = "") -> None:
    """Delete the rows loaded here (event ids `e3-RUN-<prefix>...`) from user_logins, as the database owner.

    Their tokens are erased and repeated: the README's duplicate query (test_docs_run, later in the session) would
    reveal them and exit 1 on their NOT_FOUND.
    """
    with psycopg.connect(stack.env["PG_ADMIN_DSN"]) as conn:
        conn.execute("DELETE FROM user_logins WHERE event_id LIKE %s", (f"e3-{RUN}-{prefix}%",))


def load(stack: CliStack, logins: list[tuple[str, str, str]]) -> None:
    """One login event per (user_id, ip, device_id), sent by the producer and loaded by the stack's ETL."""
    tag = f"{RUN}-{uuid.uuid4().hex[:8]}"
    events = [
        OutgoingEvent(f"e3-{tag}-{n}", body(user_id=user, ip=ip, device_id=device))
        for n, (user, ip, device) in enumerate(logins)
    ]
    env = stack.env
    send_events(sqs_client(env["SQS_ENDPOINT_URL"], identity_key(env, "producer")), env["SQS_QUEUE_URL"], events)
    ids = [e.event_id for e in events]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
            row = conn.execute("SELECT count(*) FROM user_logins WHERE event_id = ANY(%s)", (ids,)).fetchone()
        if row and row[0] == len(ids):
            return
        time.sleep(0.2)
    raise AssertionError(f"the ETL did not load {len(ids)} events within 60 s")


def tokens_of(stack: CliStack, user: str) -> tuple[str, str]:
    """The (ip token, device token) of the person's rows (one ip and one device each here)."""
    ((ip_token, device_token),) = stack.analyst_query(
        f"SELECT DISTINCT masked_ip, masked_device_id FROM user_logins WHERE user_id = '{user}'"
    )
    return str(ip_token), str(device_token)


def people(tag: str) -> tuple[str, str]:
    """A fresh synthetic (ip, device id) pair nobody else holds."""
    n = uuid.UUID(tag).int
    return f"198.18.{n % 250}.{(n >> 8) % 250 + 1}", f"e3-device-{tag[:12]}"


def revealed(stack: CliStack, tokens: tuple[str, ...]) -> list[str]:
    """What the fraud investigator's reveal answers per token: the value, or the error's name."""
    done = stack.as_("fraud-investigator", "reveal", *tokens, "--purpose", "INC-E3-FRAUD-1", "-o", "csv")
    rows = [line.split(",", 3) for line in done.stdout.splitlines()[1:]]
    return [value if reveal == "plain" else reveal.split(":")[0] for _, _, value, reveal in rows]


def erase(stack: CliStack, *args: str) -> tuple[int, str, str]:
    """`tokenvault --as privacy-officer erase ARGS --yes` under a fixed case purpose: (exit code, stdout, stderr)."""
    done = stack.as_("privacy-officer", "erase", *args, "--purpose", "GDPR-2026-E3", "--yes")
    return done.returncode, done.stdout, done.stderr
