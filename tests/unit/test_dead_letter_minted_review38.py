"""`dead-letters` erase, resend and every command against the minted-token records: review 38's findings.

Each test fails on the code before its fix (R38-1, R38-2, R38-3, R38-5, R38-9: the commits naming them; attack 39,
P1: `delete` of a letter recording tokens); the
record's format and the sweep themselves: tests/unit/test_dead_letter_minted_tokens.py.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest

from etl_service.adapters.dead_letter_queue import DeadLetterError
from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.adapters.transit_sealer import DeadLetterKeyUnusable
from etl_service.entrypoints import dead_letter_single, dead_letters
from etl_service.entrypoints.dead_letter_erasure import run_erase
from etl_service.entrypoints.dead_letter_layers import open_minted
from etl_service.entrypoints.dead_letter_vault_access import decrypt
from tests.unit.test_dead_letter_erasure_per_letter import ListedOnce
from tests.unit.test_dead_letter_minted_tokens import DEVICE_TOKEN, IP_TOKEN, KEY, letter


def test_a_letter_whose_record_of_tokens_does_not_open_is_left_in_the_dlq(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review 38, R38-1: --yes deleted it, exit 3 naming a letter gone - a genuine record lost unread, rerun exit 0."""
    person_body = json.dumps({"user_id": "u-r38", "ip": "198.51.100.38"})
    texts = {"vault:v1:m-unread": person_body, "vault:v1:m-plain": person_body, "c-bad": "not a list"}
    monkeypatch.setattr("sys.stdin", io.StringIO("user_id=u-r38\n"))
    dlq = ListedOnce([letter("m-unread", person_body, "c-bad"), letter("m-plain", person_body, None)])
    code = run_erase(argparse.Namespace(stdin=["-"], yes=True, wait=0.0), dlq, KEY, texts.__getitem__)  # type: ignore[arg-type]
    captured = capsys.readouterr()
    assert code == 3 and dlq.deleted == ["m-plain"] and "holding the person's values, deleted: 1" in captured.out
    assert "a record of tokens that could not be read (named below), left in the DLQ: 1" in captured.out
    assert "Left in the DLQ, not deleted" in captured.err and "m-unread" in captured.err


@pytest.mark.parametrize(("given", "why"), [("-1", "must be 0 or more"), ("x", "not a whole number")])
def test_max_minted_tokens_takes_a_whole_number_of_0_or_more(
    given: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review 38, R38-2: `--max-minted-tokens -1` was taken, and every run then refused every record (exit 3)."""
    with pytest.raises(SystemExit) as stopped:
        dead_letters._parser().parse_args(["erase", "-", "--max-minted-tokens", given])
    assert stopped.value.code == 2 and why in capsys.readouterr().err
    assert dead_letters._parser().parse_args(["erase", "-", "--max-minted-tokens", "0"]).max_minted_tokens == 0


class _SourceQueue:
    """What `resend` sends through: records what it re-sent (and so deleted from the DLQ)."""

    def __init__(self) -> None:
        self.resent: list[str] = []

    def resend(self, dead: Any, body: str, tag: Any) -> str:
        self.resent.append(dead.message_id)
        return "m-new"


def test_resend_never_drops_a_record_of_tokens_it_could_not_open_for_want_of_the_operators_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review 38, R38-3: `resend ID --body-file F --drop-minted-record` without a token re-sent the event and
    dropped the record unprinted ("(the record would not open)"): the tokens recorded nowhere."""
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({"user_id": "u-r38-3", "device_type": "ios", "ip": "198.51.100.83",
                                 "device_id": "d-r38-3-device", "locale": "en", "app_version": "1.0"}))  # fmt: skip
    queue = _SourceQueue()
    dead = letter("m-r38-3", json.dumps({"user_id": "u-r38-3"}), "vault:v1:c-tokens")
    with pytest.raises(DeadLetterError, match="could not be opened to print them"):
        dead_letter_single.resend_letter(queue, dead, fixed, None, KEY, drop_record=True)  # type: ignore[arg-type]
    assert queue.resent == [] and "dropping its record" not in capsys.readouterr().out
    # open_minted lets the missing token go up (a ConfigError is a ValueError: it was counted "unopenable").
    with pytest.raises(ValueError, match="operator's token"):
        open_minted(["vault:v1:c-tokens"], lambda ciphertext: decrypt(ciphertext, None, KEY))


def test_a_letter_whose_record_stops_the_sweep_is_not_counted_deleted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review 38, R38-5: the token's right to the key ended as the record was opened: the run stopped (exit 2) and
    said "holding the person's values, deleted: 2" with one letter deleted - the count kept with the request."""
    body = json.dumps({"user_id": "u-r38-5"})
    texts = {"vault:v1:m-plain": body, "vault:v1:m-rec": body}

    def decrypt(ciphertext: str) -> str:
        if ciphertext == "c-rec":
            raise DeadLetterKeyUnusable("the token may no longer decrypt with the key")
        return texts[ciphertext]

    monkeypatch.setattr("sys.stdin", io.StringIO("user_id=u-r38-5\n"))
    dlq = ListedOnce([letter("m-plain", body, None), letter("m-rec", body, "c-rec")])
    code = run_erase(argparse.Namespace(stdin=["-"], yes=True, wait=0.0), dlq, KEY, decrypt)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert code == 2 and dlq.deleted == ["m-plain"]
    assert "dead letters checked: 1" in out and "holding the person's values, deleted: 1" in out, out


def test_ctrl_c_ends_a_dead_letters_command_with_130_and_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review 38, R38-9: README and erase's help said Ctrl-C exits 1; it ended in a traceback, 130 from Python."""

    def pressed(self: object) -> None:  # Ctrl-C while the command waits on SQS
        raise KeyboardInterrupt

    monkeypatch.setenv("ETL_QUEUE_URL", "http://127.0.0.1:9/000000000000/q-r38")
    monkeypatch.setattr(DeadLetterSweep, "check", pressed)
    try:
        code = dead_letters.main(["list"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C went up out of main: a traceback, not the command's line")
    assert code == 130
    assert capsys.readouterr().err == "etl_service dead-letters: interrupted (Ctrl-C)\n"


class _Deleting:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete(self, dead: Any) -> None:
        self.deleted.append(dead.message_id)


def test_delete_refuses_a_letter_recording_minted_tokens_unless_it_drops_the_record_printing_its_tokens(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Attack 39, P1: `dead-letters delete` took a letter with a record unopened - the genuine record of a pair under
    one event id, deleted on the advice to remove plants, its tokens recorded nowhere. Refused as resend is."""
    texts = {"vault:v1:c-rec": json.dumps([IP_TOKEN, DEVICE_TOKEN])}
    monkeypatch.setattr(dead_letter_single, "decrypt", lambda ciphertext, access, key: texts[ciphertext])
    queue, dead = _Deleting(), letter("m-del", json.dumps({"user_id": "u-a39"}), "vault:v1:c-rec")
    with pytest.raises(DeadLetterError, match=r"records tokens the vault minted.*Not deleted"):
        dead_letter_single.delete_letter(queue, dead, ("addr", "tok"), KEY)  # type: ignore[arg-type]
    assert queue.deleted == [] and IP_TOKEN not in capsys.readouterr().out
    assert dead_letter_single.delete_letter(queue, dead, ("addr", "tok"), KEY, drop_record=True) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert queue.deleted == ["m-del"] and IP_TOKEN in out and DEVICE_TOKEN in out
    assert out.index(IP_TOKEN) < out.index("deleted dead letter")
    # A letter without a record is deleted unopened, as before.
    assert dead_letter_single.delete_letter(queue, letter("m-plain", "{}", None)) == 0  # type: ignore[arg-type]
    assert queue.deleted == ["m-del", "m-plain"]
