"""A dead letter records, sealed, the tokens the vault minted for its message (attack 35, N9): the format.

The batch tokenizes before it loads; a message dead-lettered after that (its load lost on its last
receive, a value of it refused by the vault, a misconfiguration met at the load) left the person's
values in the vault under tokens no row holds, out of any erasure's reach. Its envelope now carries
`minted_tokens`, sealed under the dead-letter key; an envelope without it (all those sealed before)
is written and read exactly as before, and both are the ETL's own to a take-back. `dead-letters
erase` opens the field of the letters it matches (never the others') and names the tokens with the
officer's command. The real run (SQS, OpenBao, the vault, PostgreSQL):
tests/integration/test_erasure_reaches_tokens_of_a_dead_lettered_load.py.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from etl_service.adapters.dead_letter import to_dead_letter
from etl_service.adapters.transit_sealer import TransitSealer
from etl_service.domain.erasure_match import Person
from etl_service.domain.messages import QuarantineRecord, UserLoginRow
from etl_service.entrypoints import dead_letter_single
from etl_service.entrypoints.dead_letter_erasure import run_erase
from etl_service.entrypoints.dead_letter_erasure_report import erase_command
from etl_service.entrypoints.dead_letter_erasure_sweep import sweep_dead_letters
from etl_service.entrypoints.dead_letter_layers import envelope_layers, open_minted
from etl_service.errors import DependencyDown
from etl_service.service.batch import BatchProcessor
from etl_service.service.own_dead_letters import own_dead_letters, read_shaped_as_written
from etl_service.service.ports import WriteResult
from etl_service.service.returned_letters import returned_letter, written_envelope
from etl_service.service.sealing import (
    MAX_MINTED_TOKENS,
    MINTED_FIELD_MAX_BYTES,
    MINTED_TOKEN_CHARS,
    dead_letter_body,
    minted_plaintext,
    read_dead_letter_body,
    recordable_tokens,
)
from tests.unit.etl_builders import good, message
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer
from tests.unit.test_dead_letter_erasure_per_letter import ListedOnce

KEY = "tokenvault-dead-letters"
SEALED = "vault:v1:" + base64.b64encode(b"s" * 40).decode()
SEALED_TOKENS = "vault:v1:" + base64.b64encode(b"t" * 60).decode()
IP_TOKEN, DEVICE_TOKEN = "ip_" + "A" * 22, "dev_" + "b" * 22


def test_an_envelope_without_tokens_is_written_byte_for_byte_as_before() -> None:
    assert dead_letter_body(SEALED, None, KEY) == (
        '{"format": "tokenvault-dead-letter/1", "sealed_body": "' + SEALED + '", "key": "' + KEY + '", "note": null}'
    )
    assert read_dead_letter_body(dead_letter_body(SEALED, None, KEY)) == {
        "sealed_body": SEALED,
        "key": KEY,
        "note": None,
        "minted_tokens": None,
    }


def test_an_envelope_with_tokens_reads_back_and_is_still_the_etls_own() -> None:
    body = dead_letter_body(SEALED, None, KEY, SEALED_TOKENS)
    assert json.loads(body)["minted_tokens"] == SEALED_TOKENS
    envelope = written_envelope(body)
    assert envelope is not None and envelope.minted_tokens == SEALED_TOKENS
    assert envelope.claimed_ciphertext(KEY) == SEALED and envelope.is_own(KEY, {SEALED})
    assert read_shaped_as_written(body, read_dead_letter_body(body))
    assert own_dead_letters([envelope], None) == [True]
    # Old letters too: the same answers without the field.
    old = written_envelope(dead_letter_body(SEALED, None, KEY))
    assert old is not None and old.minted_tokens is None and old.is_own(KEY, {SEALED})


@pytest.mark.parametrize(
    "minted",
    ["not a ciphertext", "vault:v1:", 'vault:v1:" , "x', "vault:v1:" + base64.b64encode(b"t" * 60).decode() + " "],
)
def test_an_envelope_whose_tokens_field_is_no_ciphertext_is_not_shaped_as_the_etl_writes(minted: str) -> None:
    body = dead_letter_body(SEALED, None, KEY, minted)
    envelope = written_envelope(body)
    assert envelope is not None and envelope.claimed_ciphertext(KEY) is None and not envelope.is_own(KEY, {SEALED})
    # A field added by hand to a genuine envelope in another order or spelling is no envelope the ETL wrote either.
    moved = json.dumps({"format": "tokenvault-dead-letter/1", "minted_tokens": SEALED_TOKENS, "sealed_body": SEALED,
                        "key": KEY, "note": None})  # fmt: skip
    assert not read_shaped_as_written(moved, read_dead_letter_body(moved))


def test_a_listed_letter_carries_its_sealed_tokens_and_its_envelope_reads_as_the_body() -> None:
    body = dead_letter_body(SEALED, None, KEY, SEALED_TOKENS)
    raw: dict[str, Any] = {"MessageId": "d-1", "ReceiptHandle": "rh", "Body": body, "MessageAttributes": {}}
    dead = to_dead_letter(raw)
    assert dead.minted_tokens == SEALED_TOKENS and dead.shaped_as_written
    assert dead.written_envelope == written_envelope(body)
    assert to_dead_letter({**raw, "Body": dead_letter_body(SEALED, None, KEY)}).minted_tokens is None


def test_the_tokens_field_stays_within_its_bound() -> None:
    longest = ["x" * MINTED_TOKEN_CHARS] * MAX_MINTED_TOKENS
    sealed_bytes = len(minted_plaintext(longest).encode()) + 12 + 16  # Transit's nonce and tag
    ciphertext = "vault:v" + "9" * 10 + ":" + "A" * (4 * -(-sealed_bytes // 3))
    added = len(dead_letter_body(SEALED, None, KEY, ciphertext)) - len(dead_letter_body(SEALED, None, KEY))
    assert added <= MINTED_FIELD_MAX_BYTES
    assert recordable_tokens([IP_TOKEN, IP_TOKEN, "y" * (MINTED_TOKEN_CHARS + 1), DEVICE_TOKEN, "z"]) == [
        IP_TOKEN,
        DEVICE_TOKEN,
    ]


def test_transit_seals_the_tokens_in_the_same_calls_and_each_envelope_gets_its_own() -> None:
    sealer = TransitSealer("http://openbao.invalid", "role", None, KEY)  # type: ignore[arg-type]
    sent: list[str] = []

    def encrypt(chunk: Sequence[dict[str, str]]) -> list[str]:
        texts = [base64.b64decode(item["plaintext"]).decode() for item in chunk]
        sent.extend(texts)
        return ["vault:v1:" + base64.b64encode(f"sealed {t}".encode()).decode() for t in texts]

    sealer._encrypt = encrypt  # type: ignore[method-assign,assignment]
    envelopes = sealer.seal(["body one", "body two", "body three"], minted=[(IP_TOKEN, DEVICE_TOKEN), (), (IP_TOKEN,)])
    assert sent == ["body one", "body two", "body three", json.dumps([IP_TOKEN, DEVICE_TOKEN]), json.dumps([IP_TOKEN])]
    fields = [read_dead_letter_body(e) or {} for e in envelopes]
    opened = [base64.b64decode(str(f["minted_tokens"])[9:]).decode() if f["minted_tokens"] else None for f in fields]
    assert opened == [f"sealed {json.dumps([IP_TOKEN, DEVICE_TOKEN])}", None, f"sealed {json.dumps([IP_TOKEN])}"]
    assert envelopes[1] == dead_letter_body(str(fields[1]["sealed_body"]), None, KEY)  # none: as before
    assert sealer.seal(["body"]) == [
        dead_letter_body("vault:v1:" + base64.b64encode(b"sealed body").decode(), None, KEY)
    ]


class RecordingSealer:
    key_name: str | None = KEY

    def __init__(self) -> None:
        self.minted: list[Sequence[Sequence[str]] | None] = []

    def seal(self, bodies: Sequence[str], minted: Sequence[Sequence[str]] | None = None) -> list[str]:
        self.minted.append(minted)
        return [dead_letter_body(SEALED, None, KEY, SEALED_TOKENS if minted and minted[i] else None)
                for i in range(len(bodies))]  # fmt: skip

    def authentic(self, ciphertexts: Sequence[str]) -> frozenset[str]:
        return frozenset()


class LostMidLoad(FakeLoginStore):
    """The database answers the batch's reads, then is lost at its writes (`writes_lost` of them)."""

    def __init__(self, writes_lost: int) -> None:
        super().__init__()
        self.writes_lost = writes_lost

    def write(
        self, rows: Sequence[UserLoginRow], quarantined: Sequence[QuarantineRecord], manifest: object = None
    ) -> WriteResult:
        if self.writes_lost:
            self.writes_lost -= 1
            raise DependencyDown("Postgres unavailable: the connection was lost", "database")
        return super().write(rows, quarantined)


@pytest.mark.parametrize("writes_lost", [1, 2], ids=["quarantine-row-written", "database-still-lost"])
def test_a_message_whose_load_is_lost_on_its_last_receive_records_the_tokens_the_vault_minted(writes_lost: int) -> None:
    queue, tokenizer, sealer = FakeQueue(), FakeTokenizer(), RecordingSealer()
    processor = BatchProcessor(queue, tokenizer, LostMidLoad(writes_lost), max_receive_count=3, sealer=sealer)
    outcome = processor.process([message(1, good(1), receive_count=3), message(2, good(2), receive_count=1)])
    assert outcome.reasons == {"dependency_unavailable": 1} and queue.dead_lettered == [
        ("m1", "dependency_unavailable")
    ]
    event = good(1)
    ip_tokens, device_tokens = tokenizer.tokenize([str(event["ip"])], [str(event["device_id"])])
    sealed_with = [m for m in sealer.minted if m]  # sealed again without a quarantine row when the database stays lost
    assert len(sealed_with) == writes_lost and all(
        m == [(*ip_tokens.values(), *device_tokens.values())] for m in sealed_with
    )
    assert [json.loads(b).get("minted_tokens") for b in queue.dead_letter_bodies] == [SEALED_TOKENS]
    assert ("retry", "m2") in queue.actions  # not on its last receive: postponed, loaded later with these tokens


def test_a_message_the_vault_refused_one_value_of_records_the_token_it_minted_for_the_other() -> None:
    class HalfTokenizer(FakeTokenizer):
        def tokenize(self, ips: Sequence[str], device_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
            return {v: IP_TOKEN for v in ips}, {}

    queue, sealer = FakeQueue(), RecordingSealer()
    BatchProcessor(queue, HalfTokenizer(), FakeLoginStore(), sealer=sealer).process([message(1, good(1))])
    assert queue.dead_lettered == [("m1", "vault_rejected_value")] and sealer.minted == [[(IP_TOKEN,)]]


def test_a_message_refused_before_the_vault_records_no_tokens() -> None:
    queue, sealer = FakeQueue(), RecordingSealer()
    BatchProcessor(queue, FakeTokenizer(), FakeLoginStore(), sealer=sealer).process([message(1, "not json")])
    assert queue.dead_lettered and sealer.minted == [None]  # sealed as before: no field


def test_open_minted_keeps_lists_of_tokens_and_counts_the_rest() -> None:
    texts = {
        "c-good": json.dumps([IP_TOKEN, DEVICE_TOKEN]),
        "c-again": json.dumps([DEVICE_TOKEN]),
        "c-no-token": json.dumps(["198.51.100.7"]),
        "c-no-list": json.dumps({"ip": IP_TOKEN}),
        "c-no-json": "ip_x",
    }
    minted = open_minted(list(texts), texts.__getitem__)
    assert minted.tokens == (IP_TOKEN, DEVICE_TOKEN) and minted.unopenable == 3


def test_open_minted_keeps_a_record_only_as_the_sealer_writes_one_event() -> None:
    """At most one ip and one device token (attack 38, M5: the ETL's identity forged 100 and spent the erase budget)."""
    other_ip, other_device = "ip_" + "C" * 22, "dev_" + "d" * 22
    texts = {
        "c-two": json.dumps([IP_TOKEN, DEVICE_TOKEN]),
        "c-device-only": json.dumps([other_device]),
        "c-three": json.dumps([IP_TOKEN, DEVICE_TOKEN, other_ip]),
        "c-two-ips": json.dumps([IP_TOKEN, other_ip]),
        "c-two-devices": json.dumps([DEVICE_TOKEN, other_device]),
        "c-hundred": json.dumps([f"ip_{n:022d}" for n in range(100)]),
    }
    minted = open_minted(list(texts), texts.__getitem__)
    assert minted.tokens == (IP_TOKEN, DEVICE_TOKEN, other_device) and minted.unopenable == 4


def test_a_forged_record_of_many_tokens_is_named_and_never_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    body = json.dumps({"user_id": ["u-m5", *(f"someone-{n}" for n in range(50))]})
    texts = {"vault:v1:m-forged": body, "c-forged": json.dumps([f"ip_{n:022d}" for n in range(100)])}
    monkeypatch.setattr("sys.stdin", io.StringIO("user_id=u-m5\n"))
    dlq = ListedOnce([letter("m-forged", body, "c-forged")])
    code = run_erase(argparse.Namespace(stdin=["-"], yes=True, wait=0.0), dlq, KEY, texts.__getitem__)  # type: ignore[arg-type]
    captured = capsys.readouterr()
    assert code == 3 and "m-forged" in captured.err and "more tokens than one event has" in captured.err
    assert "tokenvault erase" not in captured.out and "ip_0000" not in captured.out + captured.err


def test_an_aborted_sweep_prints_the_tokens_it_opened_and_deletes_no_letter_recording_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """OpenBao lost after a record was opened (attack 38, M3): tokens and counts printed, that letter kept."""
    body = json.dumps({"user_id": "u-m3", "ip": "198.51.100.33"})
    texts = {"vault:v1:m-first": body, "c-first": json.dumps([IP_TOKEN, DEVICE_TOKEN])}

    def decrypt(ciphertext: str) -> str:
        if ciphertext not in texts:
            raise DependencyDown("OpenBao unavailable: ConnectionError")
        return texts[ciphertext]

    monkeypatch.setattr("sys.stdin", io.StringIO("user_id=u-m3\n"))
    dlq = ListedOnce([letter("m-first", body, "c-first"), letter("m-second", body, None)])
    with pytest.raises(DependencyDown):
        run_erase(argparse.Namespace(stdin=["-"], yes=True, wait=0.0), dlq, KEY, decrypt)  # type: ignore[arg-type]
    captured = capsys.readouterr()
    [command] = [line.strip() for line in captured.out.splitlines() if line.strip().startswith("tokenvault erase ")]
    assert shlex.split(command)[2:4] == [IP_TOKEN, DEVICE_TOKEN] and dlq.deleted == []
    assert "left in the DLQ (not deleted: the run stopped first; its rerun names their tokens again): 1" in captured.out
    assert "aborted part-way" in captured.err


def letter(message_id: str, body: str, minted: str | None) -> Any:
    envelope = dead_letter_body(f"vault:v1:{message_id}", None, KEY, minted)
    return to_dead_letter({"MessageId": message_id, "ReceiptHandle": f"rh-{message_id}", "Body": envelope})


def test_the_sweep_opens_the_tokens_of_the_letters_it_matches_only_and_names_them_with_the_officers_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    person_body = json.dumps({"user_id": "u-n9-1", "ip": "198.51.100.9", "device_id": "d-n9"})
    other_body = json.dumps({"user_id": "u-other", "ip": "198.51.100.10", "device_id": "d-other"})
    texts = {
        "vault:v1:m-person": person_body,
        "vault:v1:m-other": other_body,
        "vault:v1:m-old": person_body,  # sealed before the field: matched, no tokens
        "c-person": json.dumps([IP_TOKEN, DEVICE_TOKEN]),
        "c-other": json.dumps(["ip_" + "O" * 22]),
    }
    opened: list[str] = []

    def decrypt(ciphertext: str) -> str:
        opened.append(ciphertext)
        return texts[ciphertext]

    dlq = ListedOnce([letter("m-person", person_body, "c-person"), letter("m-other", other_body, "c-other"),
                      letter("m-old", person_body, None)])  # fmt: skip
    person = Person(frozenset({"u-n9-1"}), frozenset({"198.51.100.9"}), frozenset({"d-n9"}))
    sweep = sweep_dead_letters(dlq, person, KEY, decrypt, delete=True, wait=0)  # type: ignore[arg-type]
    # The letter recording tokens is left for the command to delete once they are printed (attack 38, M3).
    assert list(sweep.minted) == [IP_TOKEN, DEVICE_TOKEN] and dlq.deleted == ["m-old"]
    assert [d.message_id for d in sweep.recorded] == ["m-person"]
    assert "c-other" not in opened  # an unmatched letter's tokens are never opened
    # The command's report: the tokens and the officer's command, USER_ID for the officer to fill (never the
    # operator's user_id= lines: attack 38, M6), no value; the letter deleted after the line was printed.
    monkeypatch.setattr("sys.stdin", io.StringIO("user_id=u-n9-1\nip=198.51.100.9\ndevice_id=d-n9\n"))
    dlq = ListedOnce([letter("m-person", person_body, "c-person")])
    code = run_erase(argparse.Namespace(stdin=["-"], yes=True, wait=0.0), dlq, KEY, decrypt)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert code == 0
    [command] = [line.strip() for line in out.splitlines() if line.strip().startswith("tokenvault erase ")]
    assert shlex.split(command) == ["tokenvault", "erase", IP_TOKEN, DEVICE_TOKEN, "--user-id", "USER_ID",
                                    "--purpose", "REFERENCE", "--from-dead-letters", "--yes"]  # fmt: skip
    assert dlq.deleted == ["m-person"] and "deleted: 1" in out
    assert "198.51.100.9" not in out and "d-n9" not in out


def test_a_record_of_tokens_that_does_not_open_makes_the_run_incomplete(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    person_body = json.dumps({"user_id": "u-n9-2", "ip": "198.51.100.11", "device_id": "d-n9-2"})
    monkeypatch.setattr("sys.stdin", io.StringIO("user_id=u-n9-2\n"))
    dlq = ListedOnce([letter("m-1", person_body, "c-forged")])
    texts = {"vault:v1:m-1": person_body, "c-forged": "not a list"}
    code = run_erase(argparse.Namespace(stdin=["-"], yes=True, wait=0.0), dlq, KEY, texts.__getitem__)  # type: ignore[arg-type]
    captured = capsys.readouterr()
    assert code == 3 and "tokens minted for their events could not be read: 1" in captured.err
    assert "m-1" in captured.err and "tokenvault erase" not in captured.out


def test_the_officers_command_quotes_what_a_shell_would_read() -> None:
    assert shlex.split(erase_command([IP_TOKEN], "tokenvault --stack '/a b;c'")) == [
        "tokenvault", "--stack", "/a b;c", "erase", IP_TOKEN, "--user-id", "USER_ID", "--purpose", "REFERENCE",
        "--from-dead-letters", "--yes"
    ]  # fmt: skip


def test_outside_a_stack_the_officers_line_is_printed_bare_with_where_their_options_go(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The officer's settings are not known here: the line says where they go (walk44, W44-3).

    Also with STACK_DIR set to a stack whose queue is not the one swept: its options would be a guess.
    """
    (tmp_path / "stack.env").write_text("SQS_QUEUE_URL=http://127.0.0.1:1/000000000000/another-queue\n")
    monkeypatch.setenv("STACK_DIR", str(tmp_path))
    monkeypatch.setenv("ETL_QUEUE_URL", "http://127.0.0.1:1/000000000000/login-queue")
    body = json.dumps({"user_id": "u-w44-elsewhere"})
    texts = {"vault:v1:m-2": body, "c-2": json.dumps([IP_TOKEN])}
    monkeypatch.setattr("sys.stdin", io.StringIO("user_id=u-w44-elsewhere\n"))
    args = argparse.Namespace(stdin=["-"], yes=True, wait=0.0)
    assert run_erase(args, ListedOnce([letter("m-2", body, "c-2")]), KEY, texts.__getitem__) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    expected = f"tokenvault erase {IP_TOKEN} --user-id USER_ID --purpose REFERENCE --from-dead-letters --yes"
    assert f"  {expected}\n" in out and "between `tokenvault` and `erase`" in out, out


def test_envelope_layers_collect_the_tokens_of_every_layer_opened() -> None:
    inner = dead_letter_body("vault:v1:inner", None, KEY, "c-inner")
    texts = {"vault:v1:outer": inner, "vault:v1:inner": "{}"}
    dead = to_dead_letter(
        {"MessageId": "m", "ReceiptHandle": "rh", "Body": dead_letter_body("vault:v1:outer", None, KEY, "c-outer")}
    )
    layers = envelope_layers(dead, KEY, texts.__getitem__)
    assert layers.stop is None and layers.minted == ("c-outer", "c-inner")


def test_a_letter_with_tokens_moved_back_to_the_source_queue_is_returned_to_the_dlq_unchanged() -> None:
    body = dead_letter_body(SEALED, None, KEY, SEALED_TOKENS)
    moved = message(1, body)
    returned = returned_letter(moved, KEY, {SEALED})
    assert returned is not None  # the ETL's own: sent back as it is, its record of tokens with it
    queue, sealer = FakeQueue(), RecordingSealer()
    BatchProcessor(queue, FakeTokenizer(), FakeLoginStore(), sealer=_Proving(sealer)).process([moved])
    assert queue.dead_letter_bodies == [body] and sealer.minted == []


class _Proving:
    """RecordingSealer whose `authentic` proves SEALED, as Transit's rewrap would."""

    key_name: str | None = KEY

    def __init__(self, sealer: RecordingSealer) -> None:
        self._sealer = sealer

    def seal(self, bodies: Sequence[str], minted: Sequence[Sequence[str]] | None = None) -> list[str]:
        return self._sealer.seal(bodies, minted)

    def authentic(self, ciphertexts: Sequence[str]) -> frozenset[str]:
        return frozenset(c for c in ciphertexts if c == SEALED)


def test_show_names_the_tokens_a_letter_records_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = {SEALED: '{"user_id": "u-n9-3"}', SEALED_TOKENS: json.dumps([IP_TOKEN, DEVICE_TOKEN])}
    monkeypatch.setattr(dead_letter_single, "decrypt", lambda ciphertext, access, key: texts[ciphertext])
    envelope = dead_letter_body(SEALED, None, KEY, SEALED_TOKENS)  # as the ETL writes it: not in clear
    dead = to_dead_letter({"MessageId": "m-show", "ReceiptHandle": "rh", "Body": envelope})
    assert dead_letter_single.show_letter(dead, ("addr", "token"), KEY) == 0
    printed = capsys.readouterr()
    assert printed.out == '{"user_id": "u-n9-3"}\n'
    assert f"{IP_TOKEN} {DEVICE_TOKEN}" in printed.err
    old = to_dead_letter({"MessageId": "m-old", "ReceiptHandle": "rh", "Body": dead_letter_body(SEALED, None, KEY)})
    assert dead_letter_single.show_letter(old, ("addr", "token"), KEY) == 0
    assert capsys.readouterr().err == ""  # a letter sealed before the record: as before


def event_letter(message_id: str, body: str, minted: str | None, event_id: str) -> Any:
    envelope = dead_letter_body(f"vault:v1:{message_id}", None, KEY, minted)
    attributes = {"event_id": {"DataType": "String", "StringValue": event_id}}
    raw = {"MessageId": message_id, "ReceiptHandle": f"rh-{message_id}", "Body": envelope}
    return to_dead_letter({**raw, "MessageAttributes": attributes})


def _token(prefix: str, n: int) -> str:
    return f"{prefix}_{n:022d}"


def test_many_planted_letters_of_two_tokens_each_print_no_officers_line_and_stay_in_the_dlq(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Attack 38, M5b: 50 letters of one ip_ and one dev_ token each, matched by the person's user id."""
    body = json.dumps({"user_id": "u-m5b"})
    texts = {f"vault:v1:m-{n}": body for n in range(50)}
    texts.update({f"c-{n}": json.dumps([_token("ip", n), _token("dev", n)]) for n in range(50)})
    monkeypatch.setattr("sys.stdin", io.StringIO("user_id=u-m5b\n"))
    dlq = ListedOnce([letter(f"m-{n}", body, f"c-{n}") for n in range(50)])
    code = run_erase(argparse.Namespace(stdin=["-"], yes=True, wait=0.0), dlq, KEY, texts.__getitem__)  # type: ignore[arg-type]
    captured = capsys.readouterr()
    assert code == 3 and "tokenvault erase" not in captured.out
    assert "ip_0000" not in captured.out + captured.err and "dev_0000" not in captured.out + captured.err
    assert "name 100 tokens, more than 20" in captured.err and all(f"m-{n}," in captured.err for n in range(49))
    assert dlq.deleted == []  # nothing of them deleted: the operator inspects them
    # Raised explicitly, for a genuine case: all 100 printed once, the letters deleted after.
    monkeypatch.setattr("sys.stdin", io.StringIO("user_id=u-m5b\n"))
    dlq = ListedOnce([letter(f"m-{n}", body, f"c-{n}") for n in range(50)])
    args = argparse.Namespace(stdin=["-"], yes=True, wait=0.0, max_minted_tokens=100)
    code = run_erase(args, dlq, KEY, texts.__getitem__)  # type: ignore[arg-type]
    [command] = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("tokenvault erase")]
    assert code == 0 and len(shlex.split(command)) == 2 + 100 + 6 and len(dlq.deleted) == 50


def test_letters_of_one_event_id_name_its_tokens_once_and_different_records_under_it_are_all_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    body = json.dumps({"user_id": "u-m5b-2"})
    texts = {f"vault:v1:m-{n}": body for n in range(30)}
    texts.update({"c-same": json.dumps([IP_TOKEN, DEVICE_TOKEN]), "c-other": json.dumps(["ip_" + "Z" * 22])})
    texts.update({f"c-{n}": json.dumps([_token("ip", n)]) for n in range(30)})
    # 25 letters of one event (a redelivery dead-lettered again and again): its 2 tokens, once; under the bound.
    same = [event_letter(f"m-{n}", body, "c-same", "evt-1") for n in range(25)]
    monkeypatch.setattr("sys.stdin", io.StringIO("user_id=u-m5b-2\n"))
    code = run_erase(argparse.Namespace(stdin=["-"], yes=True, wait=0.0), ListedOnce(same), KEY, texts.__getitem__)  # type: ignore[arg-type]
    [command] = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("tokenvault erase")]
    assert code == 0 and shlex.split(command)[2:4] == [IP_TOKEN, DEVICE_TOKEN] and len(shlex.split(command)) == 10
    # Two records under one event id (a plant under the genuine event id, or a retry tokenized twice): every
    # record's tokens printed, both letters named as sharing it, all deleted once printed (attack 39, P1).
    dlq = ListedOnce([event_letter("m-0", body, "c-same", "evt-2"), event_letter("m-1", body, "c-other", "evt-2"),
                      event_letter("m-2", body, "c-3", "evt-3")])  # fmt: skip
    monkeypatch.setattr("sys.stdin", io.StringIO("user_id=u-m5b-2\n"))
    code = run_erase(argparse.Namespace(stdin=["-"], yes=True, wait=0.0), dlq, KEY, texts.__getitem__)  # type: ignore[arg-type]
    captured = capsys.readouterr()
    [command] = [line for line in captured.out.splitlines() if line.strip().startswith("tokenvault erase")]
    assert code == 0 and shlex.split(command)[2:6] == [IP_TOKEN, DEVICE_TOKEN, "ip_" + "Z" * 22, _token("ip", 3)]
    assert sorted(dlq.deleted) == ["m-0", "m-1", "m-2"] and "record different tokens" not in captured.err
    [shared] = [line for line in captured.out.splitlines() if "share an event id" in line]
    assert "m-0" in shared and "m-1" in shared and "m-2" not in shared
