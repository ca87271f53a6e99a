"""A vault simply down on a message's last receive makes a plain `dependency_unavailable` letter (walk46, W46-4).

The ETL's Tokenize could not connect to the vault (its port closed: connection refused), so gRPC never sent it -
yet the letter said "tokenize outcome unknown", and `dead-letters erase` kept it, asking for a resend that finds
nothing (exit 3 until then). No channel of tokenvault_client retries a Tokenize by policy (channel.py), so one
failing with "failed to connect to all addresses" reached no vault: it stored nothing (errors.never_sent), and
the letter is a plain one, which `erase` deletes.

Real SQS, the in-process vault, OpenBao and PostgreSQL. The ETL reaches the vault through a TCP door this test
closes (listener and connections: what the ETL sees of a stopped vault) after the ETL's start-up checks.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from concurrent import futures
from pathlib import Path

import grpc
import psycopg
import pytest

from devstack.events import OutgoingEvent, send_events
from devstack.procs import free_port
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters, run_dead_letters_here
from tests.malformed_samples import body
from tokenvault_client import NO_RETRY, TokenType, Unavailable, VaultClient
from tokenvault_client.channel import _TRANSPARENT_RETRY

TOKENIZE_OUTCOME_UNKNOWN = "tokenize outcome unknown"
"""etl_service.service.outcomes.TOKENIZE_OUTCOME_UNKNOWN, spelt out."""


class Door:
    """127.0.0.1:port -> target, byte for byte; `close` shuts the listener and every connection (connection refused
    from then on, as of a stopped vault), `open` listens on the same port again."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.port = free_port()
        self._server: socket.socket | None = None
        self._open: list[socket.socket] = []
        self.open()

    def open(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._open += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)

    def close(self) -> None:
        if self._server is not None:  # shut first: a close alone leaves an accept() blocked in a thread listening
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        for end in self._open:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
        self._open = []


def test_w464_a_tokenize_that_never_reached_a_stopped_vault_is_a_plain_letter_erase_deletes(
    stack_env: dict[str, str], vault: RunningVault, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    door = Door(vault.address)
    tag = uuid.uuid4().hex
    ip, device = f"198.18.{int(tag[:2], 16) % 250}.{int(tag[2:4], 16) % 250 + 1}", f"w464-{tag[:12]}"
    user_id = f"u-{tag[:6]}"
    etl_env = {
        **etl_harness_env(stack_env, f"127.0.0.1:{door.port}", visibility_timeout=30, max_receive_count=1),
        "ETL_RECEIVERS": "1",
    }
    try:
        with etl_consumer(etl_env) as etl:  # its start-up checks through the door, answered
            etl.wired.processor.tokenize_retry_seconds = 1  # the last receive's wait for the vault to come back
            with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
                (t0,) = conn.execute("SELECT now()").fetchone() or (None,)
            door.close()  # the vault stops between receives
            event = OutgoingEvent(f"w464-{tag[:10]}", body(user_id=user_id, ip=ip, device_id=device))
            send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), etl_env["ETL_QUEUE_URL"], [event])
            drained = threading.Thread(target=etl.wired.consumer.drain, daemon=True)
            drained.start()
            letters: list[dict[str, object]] = []
            deadline = time.monotonic() + 20
            while not letters and time.monotonic() < deadline:
                time.sleep(0.3)
                letters = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
            door.open()  # the vault back: the drain's gate opens and it finishes
            drained.join(timeout=30)
            assert not drained.is_alive(), "the drain did not finish"
            letters = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)
    finally:
        door.close()
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        stored = conn.execute("SELECT count(*) FROM vault.tokens WHERE created_at >= %s", (t0,)).fetchone()
    assert len(letters) == 1, "no dead letter"
    attributes = letters[0]["MessageAttributes"]
    reason = attributes["reason"]["StringValue"]  # type: ignore[index]
    detail = attributes["reason_detail"]["StringValue"]  # type: ignore[index]

    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    criteria = f"user_id={user_id}\nip={ip}\ndevice_id={device}\n"
    swept = run_dead_letters_here(
        monkeypatch, capsys, etl_env, "erase", "-", "--yes", "--wait", "0", stdin=criteria, token=operator_token
    )
    left = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], etl_env["ETL_DLQ_URL"])
    print(
        f"\nW46-4: reason {reason}, detail {detail[:60]!r}..., tokens stored {stored}; erase exit"
        f" {swept.returncode}, letters left {len(left)}; {time.monotonic() - started:.1f} s"
    )
    assert reason == "dependency_unavailable" and stored == (0,)  # never sent: the vault stored nothing
    assert not detail.startswith(TOKENIZE_OUTCOME_UNKNOWN), detail  # was: "tokenize outcome unknown", kept by erase
    assert swept.returncode == 0, swept.stderr
    assert "holding the person's values, deleted: 1\n" in swept.stdout, swept.stdout
    assert left == []


def test_w464_no_channel_of_the_client_retries_a_tokenize_and_one_never_sent_stored_nothing() -> None:
    """The premise: the library's retry policy (channel.py) leaves Tokenize out - else an attempt the vault saw may
    precede the "failed to connect" the caller sees (measured before: 4 attempts of a Tokenize the server answered
    UNAVAILABLE). Real gRPC core, a server in this process answering every call UNAVAILABLE, then its port closed."""
    seen: list[str] = []

    def refuse(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.append(request.hex())
        context.abort(grpc.StatusCode.UNAVAILABLE, "busy")

    refusing: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(refuse)
    handlers = {"Tokenize": refusing, "Detokenize": refusing}
    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("tokenvault.v1.TokenVault", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    options = [("grpc.service_config", _TRANSPARENT_RETRY)]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            counts: dict[str, int] = {}
            for method in ("Tokenize", "Detokenize"):
                seen.clear()
                with pytest.raises(grpc.RpcError):
                    channel.unary_unary(f"/tokenvault.v1.TokenVault/{method}")(b"", timeout=10)  # type: ignore[arg-type]
                counts[method] = len(seen)
            answered = VaultClient(channel, retry=NO_RETRY, tokenize_sent_once=True)
            with pytest.raises(Unavailable) as refused:  # the server's own UNAVAILABLE: it saw the call
                answered.tokenize_columns([(TokenType.IP, ["192.0.2.1"])])
    finally:
        server.stop(0).wait()
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:  # the port closed now
        ends = []
        for sent_once in (True, False):
            with pytest.raises(Unavailable) as failed:
                client = VaultClient(channel, retry=NO_RETRY, tokenize_sent_once=sent_once)
                client.tokenize_columns([(TokenType.IP, ["192.0.2.1"])])
            ends.append(failed.value.nothing_stored)
    print(f"\nW46-4 attempts the server saw: {counts}; never sent -> nothing stored: {ends}")
    assert counts == {"Tokenize": 1, "Detokenize": 4}  # was 4 and 4
    assert not refused.value.nothing_stored
    assert ends == [True, False]  # only a channel that sends a Tokenize once proves it
