"""An erasure reaches the tokens the vault minted for a message whose load failed on its last receive (attack 35, N9).

The batch tokenizes before it loads; when the load then fails (the database lost mid-load) on a
message's last receive, the ETL dead-letters it sealed as `dependency_unavailable` - after the vault
stored the person's ip and device id under two tokens no row of user_logins holds. Until attack 35
the erasure did not reach them: the officer erases by the person's rows (there are none) and
`dead-letters erase` deleted the letter only, so an investigator's Detokenize of those tokens still
returned the values. Now the letter records the tokens (sealed), `dead-letters erase` names them with
the officer's command, and the officer's run of that command erases them.

Session stack: real SQS (ministack), the real ETL consumer (drain mode, redrive count 1: every
receive is the last), the real vault, OpenBao (sealing; the DLQ operator's decrypts) and PostgreSQL.
The outage as attack 35 made it: the admin holds a SHARE lock on user_logins so the ETL's load waits,
then ends the ETL's waiting session (as a failover would), then lets go. The runbook as README's
*Privacy officer* gives it: `dead-letters erase - --yes` by the DLQ operator (the person's values on
stdin), then the `tokenvault erase` command it prints, by the privacy officer.

Synthetic values (a benchmarking range); no assertion compares a value with output (each check is a boolean).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from devstack.events import OutgoingEvent, send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env, vault_clients
from tests.integration.dead_letters import run_dead_letters_here
from tests.integration.test_erasure_dead_letters import REPO, TOKENVAULT
from tests.malformed_samples import body
from tokenvault_client import ItemError, Revealed

_ETL_WAITING = (
    "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid"
    " WHERE NOT l.granted AND l.relation = 'public.user_logins'::regclass AND a.pid <> pg_backend_pid()"
)
_ORPHANS = (
    "SELECT token FROM vault.tokens t WHERE t.created_at >= %s AND t.sealed IS NOT NULL AND NOT EXISTS"
    " (SELECT 1 FROM user_logins u WHERE u.masked_ip = t.token OR u.masked_device_id = t.token)"
)
PURPOSE = "GDPR-2026-N9"


def officer_runs(
    stack_env: dict[str, str], address: str, printed: str, user_id: str = "USER_ID"
) -> subprocess.CompletedProcess[str]:
    """The privacy officer runs the `tokenvault erase ...` line `dead-letters erase` printed, with their purpose.

    And the request's `user_id` for the line's USER_ID (attack 38, M6); left as printed by default.
    """
    words = [user_id if w == "USER_ID" else w for w in shlex.split(printed)]
    assert words[:2] == ["tokenvault", "erase"]
    certs = Path(stack_env["STACK_DIR"]) / "certs"
    return subprocess.run(
        [
            str(TOKENVAULT),
            *("--address", address, "--ca", str(certs / "ca.pem"), "--server-name", "localhost"),
            *("--cert", str(certs / "privacy-officer.pem"), "--key", str(certs / "privacy-officer-key.pem")),
            *("--login-row-keys", stack_env["LOGIN_ROW_KEYS_FILE"]),  # the ETL's public keys, to verify the rows
            *(PURPOSE if w == "REFERENCE" else w for w in words[1:]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
        env={**os.environ, "TOKENVAULT_ANALYST_DSN": stack_env["PG_ANALYST_DSN"]},
    )


def test_after_the_runbook_the_tokens_minted_for_a_message_dead_lettered_on_its_last_receive_reveal_nothing(
    stack_env: dict[str, str],
    vault: RunningVault,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    ip = f"198.18.{int(tag[:2], 16)}.{int(tag[2:4], 16) % 250 + 1}"  # a benchmarking range, no one's address
    device_id = f"n9-device-{tag}"
    user_id = f"n9-user-{tag}"
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    admin_dsn = stack_env["PG_ADMIN_DSN"]
    env = etl_harness_env(stack_env, vault.address, max_receive_count=1)
    with (
        etl_consumer(env) as etl,
        vault_clients(stack_env, vault.address) as make,
        psycopg.connect(admin_dsn, autocommit=True) as admin,
        psycopg.connect(admin_dsn) as locker,
    ):
        (before,) = admin.execute("SELECT now()").fetchone() or (None,)
        send_events(sqs, etl.queue_url, [OutgoingEvent(f"n9-{tag}", body(user_id=user_id, ip=ip, device_id=device_id))])
        locker.execute("LOCK TABLE public.user_logins IN SHARE MODE")  # reads pass, the load waits
        result: dict[str, object] = {}
        drain = threading.Thread(target=lambda: result.update(summary=etl.wired.consumer.drain()), daemon=True)
        drain.start()
        deadline, ended = time.monotonic() + 30, False
        while time.monotonic() < deadline and not ended:
            row = admin.execute(_ETL_WAITING).fetchone()
            if row:
                ended = bool(admin.execute("SELECT pg_terminate_backend(%s)", (row[0],)).fetchone())
            time.sleep(0.05)
        locker.rollback()
        drain.join(60)
        summary = result.get("summary")
        assert ended and getattr(summary, "reasons", {}) == {"dependency_unavailable": 1}, summary
        assert admin.execute("SELECT count(*) FROM user_logins WHERE user_id = %s", (user_id,)).fetchone() == (0,)

        # What the vault minted for the message, held by no row: the person's values, revealed (the weakness).
        investigator = make("fraud-investigator")
        orphans = [str(t) for (t,) in admin.execute(_ORPHANS, (before,)).fetchall()]
        shown = investigator.detokenize(orphans, "INC-N9-0001") if orphans else []
        theirs = [
            t for t, r in zip(orphans, shown, strict=True) if isinstance(r, Revealed) and r.value in (ip, device_id)
        ]
        assert len(theirs) == 2

        # The runbook: the person has no row, so the officer's first step erases nothing; the DLQ operator's step.
        operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
        criteria = f"# {PURPOSE}\nuser_id={user_id}\nip={ip}\ndevice_id={device_id}\n"
        swept = run_dead_letters_here(
            monkeypatch, capsys, env, "erase", "-", "--yes", "--wait", "0", stdin=criteria, token=operator_token
        )
        assert swept.returncode == 0, swept.stderr
        assert "holding the person's values, deleted: 1" in swept.stdout
        printed = [line.strip() for line in swept.stdout.splitlines() if line.strip().startswith("tokenvault erase ")]
        named = sorted(w for line in printed for w in shlex.split(line) if w in theirs)
        print(f"\nN9: dead-letters erase named {len(named)} of the message's 2 tokens in {len(printed)} command(s)")
        for line in printed:  # the privacy officer's step, as printed (their purpose for REFERENCE)
            erased = officer_runs(stack_env, vault.address, line, user_id)
            assert erased.returncode == 0, erased.stderr

        # The investigator's Detokenize of the message's tokens now reveals nothing: erased.
        after = investigator.detokenize(theirs, "INC-N9-0002")
        revealed = sum(1 for r in after if isinstance(r, Revealed))
        print(f"N9: after the runbook, {revealed} of the 2 tokens reveal; {time.monotonic() - started:.1f} s")
        assert revealed == 0
        assert named == sorted(theirs)
        assert [r.code.name if isinstance(r, ItemError) else "revealed" for r in after] == ["NOT_FOUND"] * 2
