"""Only the runs of a purpose that name a stored value are withheld; the rest of the reference is kept.

Insider round 16, #2: a producer stored one serial-shaped device id (`INC2026Q3`) and every purpose
of the class `INC-2026Q3-0001`, `INC-2026Q3-0002`... was withheld whole, for everyone. Over fakes:
the rendering, the vault's rows, the memory of a partial withhold once the value is erased, and
that what spells a value of the call or holds a token is still withheld whole. The real-vault case
is in tests/integration/test_purpose_withheld_spans.py.
"""

from __future__ import annotations

import pytest

from tests.unit.purpose_vaults import DEVICE, vault_with_two_tokens
from vault_service.domain.purpose import groups_reading_as, stored_candidates
from vault_service.domain.purpose_shape import REFERENCE_SEPARATORS
from vault_service.domain.purpose_spans import every_group, with_groups_withheld
from vault_service.domain.token_types import TokenType
from vault_service.service.stored_values import StoredValueLookup
from vault_service.service.vault_base import purposes_withheld
from vault_service.service.withheld_purposes import WithheldPurposes


@pytest.mark.parametrize(
    ("purpose", "groups", "kept"),
    [
        ("INC-2026Q3-0001", {0, 1}, "(withheld)-0001"),
        ("GDPR-2026-801-SM-G991B-QWERTYUI", {3, 4, 5}, "GDPR-2026-801-(withheld)"),
        ("INC-SM-G991B-QWERTYUI-7", {1, 2, 3}, "INC-(withheld)-7"),
        ("A1B2C3D4/X-E5F6G7H8:step-2", {0, 2}, "(withheld)/X-(withheld):step-2"),
        ("INC-4821", set(), "INC-4821"),
        ("INC-SM-G991B-QWERTYUI", {0, 1, 2, 3}, ""),
    ],
)
def test_each_run_of_withheld_groups_becomes_one_marker(purpose: str, groups: set[int], kept: str) -> None:
    assert with_groups_withheld(purpose, frozenset(groups)) == kept
    assert with_groups_withheld(purpose, every_group(purpose)) == ""


def test_the_groups_withheld_are_those_of_the_runs_read_as_a_candidate() -> None:
    purpose = "INC-2026Q3-0001"
    assert {"INC2026Q3", "inc-2026q3-0001", "2026Q30001"} <= stored_candidates(purpose).device_ids
    assert groups_reading_as(purpose, ["INC2026Q3"], []) == {0, 1}
    assert groups_reading_as(purpose, ["inc-2026q3-0001"], []) == {0, 1, 2}
    assert groups_reading_as(purpose, ["2026Q30001"], []) == {1, 2}
    assert groups_reading_as(purpose, ["NOT-A-CANDIDATE"], []) == frozenset()
    assert groups_reading_as("INC-X-1.2.3.4", [], ["1.2.3.4"]) == {2, 3, 4, 5}


def test_a_producer_storing_the_group_of_a_class_of_references_leaves_them_their_context() -> None:
    vault, _, audit, ip_token, _ = vault_with_two_tokens()
    vault.tokenize("etl", [(TokenType.DEVICE_ID, "INC2026Q3")])
    before = purposes_withheld()
    for n in (1, 2, 3):
        vault.detokenize("analyst", [ip_token], f"INC-2026Q3-000{n}")
    vault.detokenize("analyst", [ip_token], "INC-2026Q4-0001")
    assert [e.purpose for e in audit.events[-4:]] == [
        "(withheld)-0001",
        "(withheld)-0002",
        "(withheld)-0003",
        "INC-2026Q4-0001",
    ]
    assert purposes_withheld() == before + 3  # a withhold in part is counted as any other


def test_two_stored_values_in_one_purpose_are_both_withheld() -> None:
    vault, _, audit, ip_token, _ = vault_with_two_tokens()
    vault.tokenize("etl", [(TokenType.DEVICE_ID, "AB12CD34EF")])
    vault.detokenize("analyst", [ip_token], f"INC-{DEVICE}-REF-AB12CD34EF-2")
    assert audit.events[-1].purpose == "INC-(withheld)-REF-(withheld)-2"


def test_a_partial_withhold_is_remembered_once_the_value_is_erased() -> None:
    # Attack 15, finding 4, for a value of another call: once the device is erased nothing in the
    # vault recognizes it, so the groups withheld are remembered for the client's identical purpose.
    vault, _, audit, ip_token, device_token = vault_with_two_tokens()
    purpose = f"INC-{DEVICE}-7"
    vault.detokenize("analyst", [ip_token], purpose)
    vault.erase("officer", [device_token], "GDPR-2026-0042")
    vault.stored_values = StoredValueLookup(vault._tokens, vault._keys)  # no cached answer
    vault.detokenize("analyst", [ip_token], purpose)
    assert [e.purpose for e in audit.events if e.client == "analyst"][-2:] == ["INC-(withheld)-7"] * 2
    assert not any(DEVICE in e.purpose for e in audit.events)


def test_what_spells_a_value_of_the_call_or_holds_a_token_is_still_withheld_whole() -> None:
    vault, _, audit, ip_token, device_token = vault_with_two_tokens()
    vault.detokenize("analyst", [device_token], f"INC-{DEVICE}-7")  # its own (masked) value
    vault.detokenize("analyst", [ip_token], f"INC-{DEVICE}-7")  # remembered whole for this client
    assert [e.purpose for e in audit.events[-2:]] == ["", ""]
    body = device_token.removeprefix("dev_")
    split_token = "INC-" + ".".join([body[:8], body[8:16], body[16:]])  # another call's token in pieces
    assert vault.stored_values.groups_naming_stored_values(split_token) == every_group(split_token)


def test_the_memory_adds_the_groups_withheld_and_a_whole_withhold_stays_whole() -> None:
    memory = WithheldPurposes()
    memory.remember("c", "INC-A1B2C3D4-X-E5F6G7H8", frozenset({1}))
    memory.remember("c", "INC-A1B2C3D4-X-E5F6G7H8", frozenset({3}))
    assert memory.withheld_before("c", "INC-A1B2C3D4-X-E5F6G7H8") == {1, 3}
    memory.remember("c", "INC-A1B2C3D4-X-E5F6G7H8")
    memory.remember("c", "INC-A1B2C3D4-X-E5F6G7H8", frozenset({1}))
    assert memory.withheld_before("c", "INC-A1B2C3D4-X-E5F6G7H8") == {0, 1, 2, 3}


@pytest.mark.parametrize("separator", list(REFERENCE_SEPARATORS))
def test_a_stored_values_run_is_withheld_whatever_separator_the_reference_uses(separator: str) -> None:
    """The lookup names groups by index and the span rendering withholds those indices (review 18, R18-7)."""
    device, ip = "SM-G991B-QWERTYUI", "203.0.113.7"
    purpose = separator.join(["INC", "2026", *device.split("-"), "x", *ip.split("."), "7"])
    purpose = purpose.replace(f"{separator}203{separator}0{separator}113{separator}7{separator}", "-203.0.113.7-")
    kept = with_groups_withheld(purpose, groups_reading_as(purpose, [device.replace("-", separator)], [ip]))
    assert device.replace("-", separator) not in kept and "G991B" not in kept and "203.0.113" not in kept
    assert kept.startswith(f"INC{separator}2026{separator}(withheld)") and kept.endswith("(withheld)-7")
