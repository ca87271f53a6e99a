"""A dead letter's record of the tokens the vault minted for its event (c59a8bf) is never lost, forged or misaimed.

Attack 38, against the real components (session stack: ministack SQS, the real ETL's drain, the vault,
OpenBao, PostgreSQL; `python -m etl_service dead-letters` in this process, the officer's `tokenvault`):
- M3: `dead-letters erase --yes` deleted a letter right after opening its record and printed the tokens
  only at the end: OpenBao lost mid-sweep -> exit 1, nothing printed, the record gone. Now a letter
  recording tokens is deleted only after they are printed, and an abort prints what was gathered;
- M5: a record forged by the ETL's identity (100 token-shaped strings) was printed in the officer's line
  and spent the erase budget on NOT_FOUND. Now a record of more than one event's tokens is refused,
  named by its letter's message id (exit 3);
- M6: the printed line carried the DLQ operator's `--user-id`s; an added victim's id made E3's count take
  the victim's rows for the person's. Now `--user-id USER_ID`: the officer gives the request's;
- M7: `resend` dropped the record; the re-sent event refused again before the vault left its tokens
  recorded nowhere. Now `resend` refuses such a letter unless `--drop-minted-record` (tokens printed).
The record is made by the ETL itself: an event whose row Postgres fails (a trigger) after the vault
minted its values, on its last receive - quarantined as `processing_failed`, its letter recording the
tokens. (The tester's E1b within a batch makes none since M4's fix: compared before the vault.)
Synthetic values only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from devstack.events import OutgoingEvent, send_events
from devstack.sqs import sqs_client
from etl_service.service.sealing import dead_letter_body, minted_plaintext, read_dead_letter_body
from tests.conftest import RunningVault, etl_consumer, etl_harness_env, vault_clients
from tests.integration.dead_letters import run_dead_letters_here
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erasure_reaches_tokens_of_a_dead_lettered_load import officer_runs
from tests.integration.test_etl_drain_exit import row_refused_by_postgres
from tests.malformed_samples import body
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import Revealed

_ORPHANS = (
    "SELECT token FROM vault.tokens t WHERE t.created_at >= %s AND t.sealed IS NOT NULL AND NOT EXISTS"
    " (SELECT 1 FROM user_logins u WHERE u.masked_ip = t.token OR u.masked_device_id = t.token)"
)


def _records(sqs: object, dlq_url: str) -> dict[str, bool]:
    """Message id -> carries `minted_tokens`, of the DLQ's letters (read without holding them: visibility 0)."""
    seen: dict[str, bool] = {}
    for _ in range(3):
        got = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0)  # type: ignore[attr-defined]
        for m in got.get("Messages", []):
            seen[m["MessageId"]] = bool((read_dead_letter_body(m["Body"]) or {}).get("minted_tokens"))
        time.sleep(0.2)
    return seen


def _printed_lines(stdout: str) -> list[str]:
    return [line.strip() for line in stdout.splitlines() if line.strip().startswith("tokenvault erase ")]


def _recorded_letter(sqs: object, etl: object, admin_dsn: str, events: list[OutgoingEvent], refused: str) -> None:
    """`events` drained, the row of event id `refused` failed by Postgres after the vault minted its values.

    Every receive is the last (max_receive_count 1): that message is quarantined as `processing_failed`, its
    letter recording the tokens its Tokenize call returned (c59a8bf) - the others load.
    """
    send_events(sqs, etl.queue_url, events)  # type: ignore[attr-defined]
    with row_refused_by_postgres(admin_dsn, refused):
        reasons = etl.wired.consumer.drain().reasons  # type: ignore[attr-defined]
    assert reasons == {"processing_failed": 1}, reasons


@contextlib.contextmanager
def _openbao_lost_after(upstream: str, marker: bytes) -> Iterator[str]:
    """OpenBao behind a proxy that forwards until a request holding `marker` passed, then refuses new connections."""
    target = urlsplit(upstream)
    listener = socket.create_server(("127.0.0.1", 0))
    passed = threading.Event()

    def pump(src: socket.socket, dst: socket.socket, watch: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if watch and marker in data:
                    passed.set()
                dst.sendall(data)
        for end in (src, dst):
            with contextlib.suppress(OSError):
                end.close()

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                if passed.is_set():
                    client.close()
                    continue
                server = socket.create_connection((target.hostname or "127.0.0.1", target.port or 8200))
                threading.Thread(target=pump, args=(client, server, True), daemon=True).start()
                threading.Thread(target=pump, args=(server, client, False), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


@pytest.mark.timeout(60)
def test_m3_a_sweep_aborted_by_openbao_lost_never_deletes_a_record_before_its_tokens_are_printed(
    stack_env: dict[str, str],
    vault: RunningVault,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    user_id = f"m3-user-{tag}"
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address, max_receive_count=1)
    token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    with etl_consumer(env) as etl, psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin:
        (before,) = admin.execute("SELECT now()").fetchone() or (None,)
        values = {"user_id": user_id, "ip": fresh_value(vault_pb2.TOKEN_TYPE_IP), "device_id": f"m3-dev-{tag}"}
        event = OutgoingEvent(f"m3-{tag}", body(**values))
        _recorded_letter(sqs, etl, stack_env["PG_ADMIN_DSN"], [event], f"m3-{tag}")
        send_events(  # two more of the person's letters, refused before the vault (no record)
            sqs,
            etl.queue_url,
            [OutgoingEvent(f"m3-{tag}-bad{n}", body(user_id=user_id, app_version="v2-beta")) for n in (1, 2)],
        )
        assert etl.wired.consumer.drain().reasons == {"invalid_app_version": 2}
        orphans = sorted(str(t) for (t,) in admin.execute(_ORPHANS, (before,)).fetchall())
        assert len(orphans) == 2
        got = sqs.receive_message(QueueUrl=etl.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
        (record,) = {
            str(f["minted_tokens"])
            for m in got.get("Messages", [])
            if (f := read_dead_letter_body(m["Body"]) or {}).get("minted_tokens")
        }

        criteria = f"# GDPR-M3\nuser_id={user_id}\n"
        with _openbao_lost_after(env["ETL_DLQ_SEAL_VAULT_ADDR"], record.encode()) as flaky:
            aborted = run_dead_letters_here(
                monkeypatch, capsys, {**env, "ETL_DLQ_SEAL_VAULT_ADDR": flaky},
                "erase", "-", "--yes", "--wait", "0", stdin=criteria, token=token,
            )  # fmt: skip
        assert aborted.returncode == 1, aborted.stdout + aborted.stderr
        named_then = {w for line in _printed_lines(aborted.stdout) for w in shlex.split(line)}
        left = _records(sqs, etl.dlq_url)
        # Either the record's tokens were printed before the abort, or its letter is still in the DLQ: never neither.
        assert set(orphans) <= named_then or any(left.values()), (aborted.stdout, aborted.stderr, left)
        assert "dead letters checked:" in aborted.stdout  # the counts of what it checked, also on an abort

        rerun = run_dead_letters_here(
            monkeypatch, capsys, env, "erase", "-", "--yes", "--wait", "30", stdin=criteria, token=token
        )
        assert rerun.returncode == 0, rerun.stderr
        named = named_then | {w for line in _printed_lines(rerun.stdout) for w in shlex.split(line)}
        print(
            f"\nM3: aborted run exit {aborted.returncode}, named {len(set(orphans) & named_then)} of 2;"
            f" letters left with a record: {sum(left.values())}; rerun named the rest;"
            f" {time.monotonic() - started:.1f} s"
        )
        assert set(orphans) <= named
        assert not any(_records(sqs, etl.dlq_url).values())


@pytest.mark.timeout(60)
def test_m5_a_record_of_more_tokens_than_one_event_has_is_refused_and_never_printed(
    stack_env: dict[str, str],
    vault: RunningVault,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    requester = f"m5-requester-{tag}"
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address)
    with etl_consumer(env) as etl:
        # The ETL's identity (its own Transit right): a letter naming many user ids, a record of 100 tokens.
        sealer = etl.wired.sealer
        assert sealer is not None and hasattr(sealer, "_encrypt")
        forged = [f"ip_M5{tag}{n:012d}" for n in range(100)]  # the vault's token shape: 22 characters
        user_ids = [requester, *(f"someone-{n:04d}" for n in range(200))]
        sealed_body, sealed_record = sealer._encrypt(  # the ETL's own Transit encrypt call
            [
                {"plaintext": base64.b64encode(json.dumps({"user_id": user_ids}).encode()).decode()},
                {"plaintext": base64.b64encode(minted_plaintext(forged).encode()).decode()},
            ]
        )
        plant = sqs.send_message(
            QueueUrl=etl.dlq_url, MessageBody=dead_letter_body(sealed_body, None, sealer.key_name, sealed_record)
        )["MessageId"]
        token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
        swept = run_dead_letters_here(
            monkeypatch, capsys, env, "erase", "-", "--yes", "--wait", "0",
            stdin=f"# GDPR-M5\nuser_id={requester}\n", token=token,
        )  # fmt: skip
        print(f"\nM5: exit {swept.returncode}; printed lines: {len(_printed_lines(swept.stdout))};"
              f" {time.monotonic() - started:.1f} s")  # fmt: skip
        assert swept.returncode == 3, swept.stdout + swept.stderr
        assert _printed_lines(swept.stdout) == [] and not any(t in swept.stdout + swept.stderr for t in forged)
        assert plant in swept.stderr and "more tokens than one event has" in swept.stderr


@pytest.mark.timeout(60)
def test_m6_the_officers_line_takes_the_requests_user_id_never_the_operators_so_a_victims_rows_are_counted(
    stack_env: dict[str, str],
    vault: RunningVault,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    requester, victim = f"m6-requester-{tag}", f"m6-victim-{tag}"
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address, max_receive_count=1)
    with (
        etl_consumer(env) as etl,
        vault_clients(stack_env, vault.address) as make,
        psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin,
    ):
        # The victim: a loaded login and a processing_failed letter of theirs recording the tokens their row holds.
        values = {"user_id": victim, "ip": fresh_value(vault_pb2.TOKEN_TYPE_IP), "device_id": f"m6-device-{tag}"}
        events = [OutgoingEvent(f"m6-{tag}-{n}", body(**values)) for n in (1, 2)]
        _recorded_letter(sqs, etl, stack_env["PG_ADMIN_DSN"], events, f"m6-{tag}-2")
        (v_tokens,) = admin.execute(
            "SELECT masked_ip, masked_device_id FROM user_logins WHERE user_id = %s", (victim,)
        ).fetchall()

        # The requester's erasure; the DLQ operator's input carries one more line: the victim's user id.
        token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
        swept = run_dead_letters_here(
            monkeypatch, capsys, env, "erase", "-", "--yes", "--wait", "0",
            stdin=f"# GDPR-M6\nuser_id={requester}\nuser_id={victim}\n", token=token,
        )  # fmt: skip
        assert swept.returncode == 0, swept.stderr
        (printed,) = _printed_lines(swept.stdout)
        words = shlex.split(printed)
        assert set(v_tokens) <= set(words) and victim not in words and requester not in words

        # The officer runs it with the request's user id (the requester's): the victim's rows are another person's.
        done = officer_runs(stack_env, vault.address, printed, requester)
        after = make("fraud-investigator").detokenize([str(t) for t in v_tokens], "INC-M6")
        print(
            f"\nM6: printed line's --user-id: {words[words.index('--user-id') + 1]}; officer's run exit"
            f" {done.returncode}; the victim's values reveal: {sum(isinstance(r, Revealed) for r in after)} of 2;"
            f" {time.monotonic() - started:.1f} s"
        )
        assert done.returncode == 1 and "nothing was erased" in done.stderr and "1 other person" in done.stderr
        assert all(isinstance(r, Revealed) for r in after)


@pytest.mark.timeout(60)
def test_m7_resend_keeps_a_letter_recording_minted_tokens_unless_told_to_drop_the_record_and_then_prints_them(
    stack_env: dict[str, str],
    vault: RunningVault,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    user_id = f"m7-user-{tag}"
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    env = etl_harness_env(stack_env, vault.address, max_receive_count=1)
    token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    with etl_consumer(env) as etl, psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin:
        (before,) = admin.execute("SELECT now()").fetchone() or (None,)
        values = {"user_id": user_id, "ip": fresh_value(vault_pb2.TOKEN_TYPE_IP), "device_id": f"m7-dev-{tag}"}
        event = OutgoingEvent(f"m7-{tag}", body(**values))
        _recorded_letter(sqs, etl, stack_env["PG_ADMIN_DSN"], [event], f"m7-{tag}")
        ((letter, recorded),) = _records(sqs, etl.dlq_url).items()
        orphans = sorted(str(t) for (t,) in admin.execute(_ORPHANS, (before,)).fetchall())
        assert recorded and len(orphans) == 2

        # A routine resend: refused, the letter and its record stay.
        refused = run_dead_letters_here(monkeypatch, capsys, env, "resend", letter, token=token)
        assert refused.returncode == 1 and "--drop-minted-record" in refused.stderr, refused.stdout + refused.stderr
        assert _records(sqs, etl.dlq_url) == {letter: True}
        # Told to drop it: the tokens are printed before it goes.
        dropped = run_dead_letters_here(monkeypatch, capsys, env, "resend", letter, "--drop-minted-record", token=token)
        assert dropped.returncode == 0, dropped.stderr
        print(
            f"\nM7: plain resend exit {refused.returncode}; with --drop-minted-record exit {dropped.returncode},"
            f" tokens printed: {sum(t in dropped.stdout for t in orphans)} of 2; {time.monotonic() - started:.1f} s"
        )
        assert all(t in dropped.stdout for t in orphans)
