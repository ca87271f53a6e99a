"""`dead-letters delete` and a tampered envelope carrying a `minted_tokens` field: review 39's finding (R39-2).

The sweep never reads a tampered envelope's record (`envelope_layers` stops at it, nothing sent to OpenBao) and
tells the operator to remove such letters with `dead-letters delete MESSAGE_ID --yes`; since attack 39's P1 fix
`delete` refused one carrying the field as "records tokens the vault minted for its event", and with
--drop-minted-record sent its ciphertext to OpenBao and printed what it held as the vault's minted tokens.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from etl_service.adapters.dead_letter import to_dead_letter
from etl_service.entrypoints import dead_letter_single
from etl_service.service.sealing import dead_letter_body
from tests.unit.test_dead_letter_minted_tokens import IP_TOKEN, KEY


class _Deleting:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete(self, dead: Any) -> None:
        self.deleted.append(dead.message_id)


def _planted(message_id: str, sealed: str | None, key: str | None) -> Any:
    body = dead_letter_body(sealed, None if sealed else "not kept", key, "vault:v1:planted-record")
    return to_dead_letter({"MessageId": message_id, "ReceiptHandle": f"rh-{message_id}", "Body": body})


@pytest.mark.parametrize(
    ("sealed", "key"),
    [("vault:v1:planted", "another-transit-key"), (None, None)],
    ids=["tampered-envelope", "envelope-without-a-sealed-body"],
)
def test_delete_takes_a_letter_whose_record_the_sweep_never_reads_unopened(
    sealed: str | None, key: str | None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    opened: list[str] = []

    def decrypt(ciphertext: str, access: object, key: str) -> str:
        opened.append(ciphertext)
        return json.dumps([IP_TOKEN])

    monkeypatch.setattr(dead_letter_single, "decrypt", decrypt)
    queue = _Deleting()
    assert dead_letter_single.delete_letter(queue, _planted("m-t", sealed, key), None, KEY) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert queue.deleted == ["m-t"] and opened == [], opened  # nothing of it sent to OpenBao
    assert IP_TOKEN not in out and "deleted dead letter m-t" in out
