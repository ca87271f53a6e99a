"""The Transit proof of dead letters, batched, against the real OpenBao (insider round 13, finding 1).

A take-back proves every claimed ciphertext of its listing in rewrap batches. Were one forged
claim to fail its whole batch (an HTTP 400 read as "every item failed"), a producer could have
every genuine letter listed with it taken back and sealed again under a wrong reason, on every
drain. OpenBao answers per item; these tests keep it so for the sealer as the drain uses it.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from etl_service.adapters.transit_sealer import TransitSealer


def _sealer(stack_env: dict[str, str]) -> TransitSealer:
    return TransitSealer(
        stack_env["VAULT_ADDR"], stack_env["DLQ_SEAL_ROLE_ID"], Path(stack_env["DLQ_SEAL_SECRET_ID_FILE"])
    )


def _ciphertext(envelope: str) -> str:
    sealed = json.loads(envelope)["sealed_body"]
    assert isinstance(sealed, str)
    return sealed


def test_a_forged_claim_batched_with_genuine_ones_fails_alone(stack_env: dict[str, str]) -> None:
    sealer = _sealer(stack_env)
    genuine = [_ciphertext(e) for e in sealer.seal([f'{{"user_id": "proof-{i}"}}' for i in range(3)])]
    forged = "vault:v1:" + base64.b64encode(b'{"user_id": "forged", "ip": "203.0.113.7"}').decode()
    wrong_version = re.sub(r"^vault:v\d+:", "vault:v9999:", genuine[0])
    assert wrong_version != genuine[0]
    claims = [genuine[0], forged, genuine[1], wrong_version, genuine[2]]
    assert sealer.authentic(claims) == frozenset(genuine)


def test_a_batch_of_forged_claims_only_proves_none(stack_env: dict[str, str]) -> None:
    sealer = _sealer(stack_env)
    forged = ["vault:v1:" + base64.b64encode(f"not sealed {i}".encode()).decode() for i in range(3)]
    assert sealer.authentic(forged) == frozenset()
