"""A purpose keeps its context: only what names a value is withheld (insider round 16, #2; review 17, #5).

Insider round 16, #2: a producer (the ETL identity tokenizes any value it likes) stored one
serial-shaped device id, `INC2026Q3`, and from then on every purpose of the class `INC-2026Q3-0001`,
`INC-2026Q3-0002`... was withheld whole. Now only the run of groups naming the stored value is
withheld, replaced by the vault's marker: `(withheld)-0001`. Review 17, #5: an Erase withheld a
release or date reference with a revision suffix (`REL-2026.12.04.1b`) for its shape alone; such a
reference now keeps its text. What names a value is still never kept.
"""

from __future__ import annotations

import uuid

from tests.integration.audit_rows import audit_rows_since, last_audit_id
from tests.integration.purpose_values import (
    DEVICE,
    IP_TYPE,
    StubFor,
    audit_rows_holding,
    benchmarking_ip,
    letters_device_id,
    tokenized,
)
from tokenvault_api.v1 import vault_pb2

REVEALED = "ok: 1 revealed, 0 refused"
ERASED = "ok: 1 erased, 0 not erased"


def _class_group() -> str:
    """A made-up group shared by a class of references, such as `2026Q3`: a year, a quarter's letter and number."""
    n = uuid.uuid4().int
    return f"20{n % 100:02d}Q{(n >> 8) % 4 + 1}"


def _reveal_rows(env: dict[str, str], stub_for: StubFor, ip_token: str, purposes: list[str]) -> list[str]:
    """The purposes the analyst's audit rows kept for a masked reveal of `ip_token` under each of `purposes`."""
    analyst = stub_for("analyst")
    before = last_audit_id(env)
    for purpose in purposes:
        (result,) = analyst.Detokenize(
            vault_pb2.DetokenizeRequest(tokens=[ip_token], purpose=purpose), timeout=10
        ).results
        assert result.WhichOneof("result") == "value"  # served as with any purpose
    rows = audit_rows_since(env, before, "analyst")
    assert [(action, outcome) for action, outcome, _ in rows] == [("detokenize", REVEALED)] * len(purposes)
    return [purpose for _, _, purpose in rows]


def test_a_class_of_references_keeps_its_context_when_a_producer_stores_their_shared_group(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    group = _class_group()
    ip_token, _ = tokenized(stub_for, [(IP_TYPE, benchmarking_ip()), (DEVICE, f"INC{group}")])  # the poison
    purposes = [f"INC-{group}-0001", f"INC-{group}-0002", f"INC-{group}-0003:step-2"]
    assert _reveal_rows(stack_env, stub_for, ip_token, purposes) == [
        "(withheld)-0001",
        "(withheld)-0002",
        "(withheld)-0003:step-2",
    ]
    (other_ip,) = tokenized(stub_for, [(IP_TYPE, benchmarking_ip())])
    before = last_audit_id(stack_env)
    stub_for("privacy-officer").Erase(
        vault_pb2.EraseRequest(tokens=[other_ip], purpose=f"INC-{group}-0004"), timeout=10
    )
    assert audit_rows_since(stack_env, before, "privacy-officer") == [("erase", ERASED, "(withheld)-0004")]
    assert audit_rows_holding(stack_env, f"INC-{group}") == 0  # what names the stored value is still withheld


def test_a_stored_device_named_in_a_reference_is_withheld_and_the_reference_kept(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    device = letters_device_id()
    ip_token, _ = tokenized(stub_for, [(IP_TYPE, benchmarking_ip()), (DEVICE, device)])
    purposes = [f"GDPR-2026-801-{device}", f"case-{device.lower()}", f"INC-{device}-7"]
    assert _reveal_rows(stack_env, stub_for, ip_token, purposes) == [
        "GDPR-2026-801-(withheld)",
        "case-(withheld)",
        "INC-(withheld)-7",
    ]
    assert audit_rows_holding(stack_env, device) == 0


def test_release_and_date_references_keep_their_text_in_an_erasure(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    references = ["REL-2026.12.04.1", "REL-2026.12.04.1b", "CHG-2026-12-04-2a", "BUILD-2026.4.17b"]
    tokens = tokenized(stub_for, [(IP_TYPE, benchmarking_ip()) for _ in references])
    officer = stub_for("privacy-officer")
    before = last_audit_id(stack_env)
    for token, reference in zip(tokens, references, strict=True):
        (erased,) = officer.Erase(vault_pb2.EraseRequest(tokens=[token], purpose=reference), timeout=10).results
        assert erased.erased
    assert audit_rows_since(stack_env, before, "privacy-officer") == [
        ("erase", ERASED, reference) for reference in references
    ]


def test_an_erasure_naming_a_device_of_a_serial_shape_still_keeps_none_of_it(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    # The shape rule still withholds, whole, what may name the device an erasure split across
    # replicas erased first (review 16, finding 2): a model or serial group is no revision suffix.
    device = letters_device_id()
    (ip_token,) = tokenized(stub_for, [(IP_TYPE, benchmarking_ip())])  # the device itself is not stored
    officer = stub_for("privacy-officer")
    before = last_audit_id(stack_env)
    officer.Erase(vault_pb2.EraseRequest(tokens=[ip_token], purpose=f"GDPR-2026-801-{device}"), timeout=10)
    assert audit_rows_since(stack_env, before, "privacy-officer") == [("erase", ERASED, "")]
    assert audit_rows_holding(stack_env, device) == 0
