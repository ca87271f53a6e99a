"""A purpose withheld for spelling or naming a value stays withheld on the client's later calls (attack 15, finding 4).

An erasure split into calls, device first: the device call's purpose `GDPR-2026-801-<device id>`
spells its own value and is withheld; once the device is erased nothing in the vault recognizes
that id, so the ip call with the same purpose kept it verbatim for good. The vault now remembers,
per client and in memory, the purposes it withheld so, and withholds the identical purpose again.
"""

from __future__ import annotations

import socket

from tests.conftest import RunningVault, running_vault
from tests.integration.audit_rows import audit_rows_since, last_audit_id
from tests.integration.purpose_values import (
    DEVICE,
    IP_TYPE,
    StubFor,
    audit_rows_holding,
    benchmarking_ip,
    erase_split_in_two,
    letters_device_id,
    tokenized,
)
from tokenvault_api.v1 import vault_pb2


def test_an_erasure_split_device_first_leaves_the_device_id_in_no_audit_row(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    erasure = erase_split_in_two(stack_env, stub_for, device_first=True)
    assert erasure.erased == [True, True]
    assert erasure.officer_rows == [
        ("erase", "ok: 1 erased, 0 not erased", ""),  # spells its own value: withheld, and remembered
        ("erase", "ok: 1 erased, 0 not erased", ""),  # the device is gone: withheld as remembered
    ]
    assert audit_rows_holding(stack_env, erasure.device) == 0, "an audit row holds the erased device id"


def test_an_erasure_split_device_first_and_resumed_on_another_replica_leaves_the_device_id_in_no_audit_row(
    stack_env: dict[str, str], stub_for: StubFor, vault: RunningVault
) -> None:
    # Review 16, finding 2: the memory above is per replica (the shipped deployment runs 2), and
    # gone at a restart. The ip call on another replica kept `GDPR-2026-801-<device id>` for good:
    # an Erase's purpose of a device id's shape is now withheld by its text alone.
    device = letters_device_id()
    ip_token, device_token = tokenized(stub_for, [(IP_TYPE, benchmarking_ip()), (DEVICE, device)])
    purpose = f"GDPR-2026-801-{device}"
    before = last_audit_id(stack_env)
    (first,) = (
        stub_for("privacy-officer")
        .Erase(vault_pb2.EraseRequest(tokens=[device_token], purpose=purpose), timeout=10)
        .results
    )
    with running_vault(stack_env) as other_replica:
        other = stub_for("privacy-officer", other_replica.address)
        (second,) = other.Erase(vault_pb2.EraseRequest(tokens=[ip_token], purpose=purpose), timeout=10).results
    assert (first.erased, second.erased) == (True, True)
    assert audit_rows_since(stack_env, before, "privacy-officer") == [("erase", "ok: 1 erased, 0 not erased", "")] * 2
    assert audit_rows_holding(stack_env, device) == 0, "an audit row holds the erased device id"


def test_an_erasure_keeps_a_usual_reference(stack_env: dict[str, str], stub_for: StubFor) -> None:
    references = ["GDPR-2026-0042", "INC-4821", "SECOPS-2026-000123:step-2"]
    tokens = tokenized(stub_for, [(IP_TYPE, benchmarking_ip()) for _ in references])
    officer = stub_for("privacy-officer")
    before = last_audit_id(stack_env)
    for token, reference in zip(tokens, references, strict=True):
        officer.Erase(vault_pb2.EraseRequest(tokens=[token], purpose=reference), timeout=10)
    assert audit_rows_since(stack_env, before, "privacy-officer") == [
        ("erase", "ok: 1 erased, 0 not erased", reference) for reference in references
    ]


def test_a_withheld_purpose_is_remembered_for_its_client_only(stack_env: dict[str, str], stub_for: StubFor) -> None:
    # An erasure of an ip with the ip's hex number in the purpose: withheld, and remembered for the
    # officer (its later erasure of a device with that purpose is withheld too), not for another
    # client, whose identical reference is kept (a number reading is never looked up among stored
    # values): remembered for all, one client's withhold would blank every client's reference.
    ip = benchmarking_ip()
    ip_token, device_token, other_device = tokenized(
        stub_for, [(IP_TYPE, ip), (DEVICE, letters_device_id()), (DEVICE, letters_device_id())]
    )
    purpose = f"INC-{socket.inet_aton(ip).hex()}"
    officer = stub_for("privacy-officer")
    before = last_audit_id(stack_env)
    for token in (ip_token, device_token):
        (erased,) = officer.Erase(vault_pb2.EraseRequest(tokens=[token], purpose=purpose), timeout=10).results
        assert erased.erased
    reveal = vault_pb2.DetokenizeRequest(tokens=[other_device], purpose=purpose)
    (result,) = stub_for("fraud-investigator").Detokenize(reveal, timeout=10).results
    assert result.WhichOneof("result") == "value"
    assert audit_rows_since(stack_env, before, "privacy-officer") == [("erase", "ok: 1 erased, 0 not erased", "")] * 2
    assert audit_rows_since(stack_env, before, "fraud-investigator") == [
        ("detokenize", "ok: 1 revealed, 0 refused", purpose)
    ]
