"""A Tokenize whose answer is lost on a message's last receive is sent again, not taken for a refusal (A41-4).

A TCP relay between the ETL and the real vault (as attack 41's probe) drops the vault's replies after the
start-up checks: the vault commits the Tokenize, the ETL's call ends DEADLINE_EXCEEDED. On the message's last
receive (redrive count 1) the ETL used to dead-letter it `dependency_unavailable` without a `minted_tokens`
record while the vault kept its values under tokens no row holds. Now it sends the same Tokenize again once
the vault answers (service/batch.py `_tokenize`): the same values return the same tokens, and the row loads.
If the vault stays silent, the letter says the tokenize outcome is unknown.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY

from devstack.events import OutgoingEvent, send_events
from devstack.procs import free_port
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters, run_dead_letters_here
from tests.integration.fresh_values import fresh_value
from tests.malformed_samples import body
from tokenvault_api.v1 import vault_pb2
from tokenvault_client.models import Revealed

TOKENIZE_OUTCOME_UNKNOWN = "tokenize outcome unknown"
"""etl_service.service.outcomes.TOKENIZE_OUTCOME_UNKNOWN, spelt out: the old code (without it) runs this test too."""
TOKENIZE_DEADLINE_SECONDS = 3.0
"""The ETL's Tokenize deadline in these tests (10 s in service): how long a lost answer takes to notice."""


class Relay:
    """127.0.0.1:port -> target; while `drop_replies`, what the target sends back after a connection's first request
    is discarded (the connection stays open), and that connection stays deaf until `reset_deaf` closes it (a load
    balancer losing a connection); new connections pass. `dropped` counts the bytes discarded."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.port = free_port()
        self.drop_replies = False
        self.dropped = 0
        self._deaf: list[tuple[socket.socket, socket.socket]] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            requested = [0, 0]  # chunks the client sent; 1 once a call's request has gone through (TLS's first)
            threading.Thread(target=self._forward, args=(client, upstream, requested), daemon=True).start()
            threading.Thread(target=self._back, args=(upstream, client, requested), daemon=True).start()

    @staticmethod
    def _forward(src: socket.socket, dst: socket.socket, requested: list[int]) -> None:
        try:
            while data := src.recv(65536):
                requested[0] += 1
                if requested[0] >= 3 and len(data) >= 200:
                    requested[1] = 1
                dst.sendall(data)
        except OSError:
            pass

    def _back(self, src: socket.socket, dst: socket.socket, requested: list[int]) -> None:
        deaf = False
        try:
            while data := src.recv(65536):
                if deaf or (self.drop_replies and requested[1]):
                    if not deaf:
                        deaf = True
                        self._deaf.append((src, dst))
                    self.dropped += len(data)
                    continue
                dst.sendall(data)
        except OSError:
            pass

    def reset_deaf(self) -> None:
        """Stop dropping: close the connections that lost replies (their peers see a reset); new ones pass."""
        self.drop_replies = False
        for pair in self._deaf:
            for end in pair:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def close(self) -> None:
        self.reset_deaf()
        self._server.close()


def _new_tokens() -> float:
    """The new tokens the in-process vault has counted for the ETL's identity (tokenvault_tokenize_new_tokens_total)."""
    return REGISTRY.get_sample_value("tokenvault_tokenize_new_tokens_total", {"client": "etl-service"}) or 0.0


def _unheld_values(stack_env: dict[str, str], since: object, client_for: Callable[..., object]) -> list[str]:
    """The values of tokens minted since `since` that no user_logins row holds (revealed by the investigator)."""
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        unheld = [
            str(t)
            for (t,) in conn.execute(
                "SELECT token FROM vault.tokens t WHERE created_at >= %s AND sealed IS NOT NULL AND NOT EXISTS"
                " (SELECT 1 FROM user_logins u WHERE u.masked_ip = t.token OR u.masked_device_id = t.token)",
                (since,),
            )
        ]
    shown = client_for("fraud-investigator").detokenize(unheld, "INC-A414") if unheld else []  # type: ignore[attr-defined]
    return [o.value for o in shown if isinstance(o, Revealed)]


def _run(
    stack_env: dict[str, str], vault: RunningVault, answer_again: bool, retry_seconds: float, metered: list[float]
) -> tuple[str, list[dict[str, object]], tuple[str, str], object, dict[str, str], str]:
    """Send one event on its last receive through a relay that loses the vault's answers; what the DLQ holds.

    `metered` gets the new tokens the vault counted for the ETL meanwhile (its in-process metrics).
    """
    relay = Relay(vault.address)
    tag = uuid.uuid4().hex
    ip, device = fresh_value(vault_pb2.TOKEN_TYPE_IP), f"a414-{tag[:12]}"
    etl_env = {
        **etl_harness_env(stack_env, f"127.0.0.1:{relay.port}", visibility_timeout=30, max_receive_count=1),
        "ETL_RECEIVERS": "1",
    }
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        (t0,) = conn.execute("SELECT now()").fetchone() or (None,)
    event_id = f"a414-{tag[:10]}"
    try:
        with etl_consumer(etl_env) as etl:  # start-up checks through the relay, answered
            etl.wired.tokenizer._client._deadline = TOKENIZE_DEADLINE_SECONDS  # a shorter wait
            etl.wired.processor.tokenize_retry_seconds = retry_seconds
            new_before = _new_tokens()
            with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:  # the start-up probe's values may be new too
                (t1,) = conn.execute("SELECT now()").fetchone() or (None,)
            relay.drop_replies = True
            event = OutgoingEvent(event_id, body(user_id=f"u-{tag[:6]}", ip=ip, device_id=device))
            send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), etl_env["ETL_QUEUE_URL"], [event])
            drained = threading.Thread(target=etl.wired.consumer.drain, daemon=True)
            drained.start()
            deadline = time.monotonic() + 40
            with psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as conn:
                while answer_again and time.monotonic() < deadline:  # until the vault committed the event's values
                    new = conn.execute("SELECT count(*) FROM vault.tokens WHERE created_at >= %s", (t1,)).fetchone()
                    if new and new[0] >= 2:
                        break
                    time.sleep(0.1)
            if answer_again:  # its answer went, lost, into the deaf connection; the ETL's call ends at its deadline
                # (reset before, gRPC itself sends the call again on a new connection: the answer is not lost)
                time.sleep(TOKENIZE_DEADLINE_SECONDS + 0.5)
                assert relay.dropped, "no answer was lost"
            letters: list[dict[str, object]] = []
            while not answer_again and not letters and time.monotonic() < deadline:
                time.sleep(0.5)  # the vault stays silent until the message is dead-lettered
                letters = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
            relay.reset_deaf()  # heard again: the drain's gate opens and it finishes
            drained.join(timeout=40)
            assert not drained.is_alive(), "the drain did not finish"
            letters = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
            metered.append(_new_tokens() - new_before)
    finally:
        relay.close()
    return event_id, letters, (ip, device), t0, etl_env, f"u-{tag[:6]}"


def test_a414_a_tokenize_answer_lost_on_the_last_receive_is_sent_again_and_the_event_loads(
    stack_env: dict[str, str], vault: RunningVault, client_for: Callable[..., object]
) -> None:
    started = time.monotonic()
    metered: list[float] = []
    event_id, letters, values, t0, _, _ = _run(stack_env, vault, answer_again=True, retry_seconds=20, metered=metered)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        loaded = conn.execute("SELECT count(*) FROM user_logins WHERE event_id = %s", (event_id,)).fetchone()
    unheld = _unheld_values(stack_env, t0, client_for)
    print(
        f"\nA41-4 retried: letters {len(letters)}, rows {loaded}, this event's values under unheld tokens"
        f" {sum(v in values for v in unheld)}, new tokens metered {metered}; {time.monotonic() - started:.1f} s"
    )
    assert letters == [] and loaded == (1,)  # was: dead-lettered dependency_unavailable, 0 rows
    assert not any(v in values for v in unheld)  # each value under the one token its row holds
    assert metered == [2.0]  # the retry of the values the lost call stored is no new token


def test_a414_a_tokenize_answer_lost_and_its_retry_too_is_dead_lettered_as_unknown_and_erase_leaves_it_to_resend(
    stack_env: dict[str, str],
    vault: RunningVault,
    client_for: Callable[..., object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    event_id, letters, values, t0, etl_env, user_id = _run(
        stack_env, vault, answer_again=False, retry_seconds=2, metered=[]
    )
    assert len(letters) == 1, "no dead letter"
    attributes = letters[0]["MessageAttributes"]
    reason = attributes["reason"]["StringValue"]  # type: ignore[index]
    detail = attributes["reason_detail"]["StringValue"]  # type: ignore[index]
    assert reason == "dependency_unavailable"
    assert detail.startswith(TOKENIZE_OUTCOME_UNKNOWN)  # was: no word of it
    stored = sum(v in values for v in _unheld_values(stack_env, t0, client_for))  # the vault committed, unheard

    # The DLQ operator's erasure step: the letter is left, with what to do, and the run exits 3.
    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    criteria = f"user_id={user_id}\nip={values[0]}\ndevice_id={values[1]}\n"
    swept = run_dead_letters_here(
        monkeypatch, capsys, etl_env, "erase", "-", "--yes", "--wait", "0", stdin=criteria, token=operator_token
    )
    assert swept.returncode == 3, swept.stderr
    assert "tokenize outcome unknown: 1 letter(s)" in swept.stderr
    # Counted left, not deleted: the counts are kept with the erasure request (walk46, W46-3: "deleted: 1").
    assert "holding the person's values, deleted: 0\n" in swept.stdout, swept.stdout
    assert "tokenize outcome unknown (named below), left in the DLQ: 1" in swept.stdout, swept.stdout
    message_id = str(letters[0]["MessageId"])
    assert message_id in swept.stderr
    assert [str(m["MessageId"]) for m in all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl_env["ETL_DLQ_URL"])] == [
        message_id
    ]

    # What the line says: resent, the ETL's Tokenize returns the tokens the vault stored, now in a row.
    resent = run_dead_letters_here(monkeypatch, capsys, etl_env, "resend", message_id, token=operator_token)
    assert resent.returncode == 0, resent.stderr
    with etl_consumer({**etl_env, "ETL_VAULT_ADDRESS": vault.address}) as etl:
        etl.wired.consumer.drain()
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        loaded = conn.execute("SELECT count(*) FROM user_logins WHERE event_id = %s", (event_id,)).fetchone()
    unheld = sum(v in values for v in _unheld_values(stack_env, t0, client_for))
    print(
        f"\nA41-4 retry lost too: reason {reason}, detail {detail[:40]!r}..., values stored unheard {stored};"
        f" erase exit {swept.returncode}; after resend rows {loaded}, values under unheld tokens {unheld};"
        f" {time.monotonic() - started:.1f} s"
    )
    # The lost calls stored the event's values unheard: both, or one when a call's deadline ended it between its
    # inserts (CI under load once saw 1) - either way tokens no row held, which the resend gave their row.
    assert 1 <= stored <= 2 and loaded == (1,) and unheld == 0
