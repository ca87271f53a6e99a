"""An Erase's purpose of a stored value's shape is withheld by its text alone (review 16, finding 2).

The withheld-purpose memory is per replica: a split erasure (device first, then the ip, same
purpose) resumed on another replica, or after a restart, kept the erased device id in the ip call's
row. Over fakes, two vaults on one store stand for two replicas; the real-vault case is in
tests/integration/test_purpose_withheld_remembered.py.
"""

from __future__ import annotations

import pytest

from tests.unit.fakes import FakeAuditLog, FakeKeyStore, FakeKeyWrapper, FakeTokenStore
from vault_service.domain.policy import parse_policy
from vault_service.domain.purpose import check_purpose, shaped_as_a_stored_value
from vault_service.domain.token_types import TokenType
from vault_service.service.keyring import KeyManager
from vault_service.service.vault import TokenVault

DEVICE = "SM-G991B-QWERTYUI"
POLICY = parse_policy(
    {"clients": {"etl": {"tokenize": ["ip", "device_id"]}, "officer": {"erase": ["ip", "device_id"]}}}
)
USUAL_REFERENCES = ("GDPR-2026-0042", "INC-4821", "SECOPS-2026-000123:step-2", "GDPR-REQ-17", "CASE-2026-0815")


@pytest.mark.parametrize("reference", USUAL_REFERENCES)
def test_a_usual_reference_has_no_stored_value_shape(reference: str) -> None:
    check_purpose(reference)
    assert not shaped_as_a_stored_value(reference)


@pytest.mark.parametrize("purpose", [f"GDPR-2026-801-{DEVICE}", "INC-PIXEL-7A-GXASWE", "INC-1.2.3.4.5"])
def test_a_device_id_of_a_serial_shape_or_an_ip_written_as_an_address_has_it(purpose: str) -> None:
    assert shaped_as_a_stored_value(purpose)


RELEASE_AND_DATE_REFERENCES = (
    "REL-2026.12.04.1",
    "REL-2026.12.04.1b",
    "CHG-2026-12-04-2a",
    "BUILD-2026.4.17b",
    "REL-2026.12.04-2a",
    "INC-2026Q3-0001",
    "OPS-2026W49-17",
)


@pytest.mark.parametrize("reference", RELEASE_AND_DATE_REFERENCES)
def test_a_release_or_date_reference_with_a_revision_or_period_has_no_stored_value_shape(reference: str) -> None:
    # Review 17, finding 5: `1b` after a number, `2026Q3`, were read as a model's group.
    check_purpose(reference)
    assert not shaped_as_a_stored_value(reference)


@pytest.mark.parametrize(
    "purpose", ["INC-2026-PIXEL-7A-GXASWE", "REL-2026.12.04-ABCD-X7Y8", "INC-2026Q3-SM-G991B", "GDPR-12-4A5B-QWERTY"]
)
def test_a_model_or_serial_group_beside_a_date_or_number_still_has_it(purpose: str) -> None:
    assert shaped_as_a_stored_value(purpose)


def test_an_erasure_keeps_a_release_reference_and_withholds_only_a_stored_group_of_a_reference() -> None:
    first, _, store, ip_token, device_token = _replicas()
    first.erase("officer", [ip_token], "REL-2026.12.04.1b")
    first.tokenize("etl", [(TokenType.DEVICE_ID, "INC2026Q3")])  # a producer's poison (insider round 16, #2)
    first.erase("officer", [device_token], "INC-2026Q3-0001")
    assert [event.purpose for event in store.erase_events] == ["REL-2026.12.04.1b", "(withheld)-0001"]


def _replicas() -> tuple[TokenVault, TokenVault, FakeTokenStore, str, str]:
    store = FakeTokenStore()
    keys = KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    first, second = TokenVault(store, keys, POLICY, FakeAuditLog()), TokenVault(store, keys, POLICY, FakeAuditLog())
    ip_token, device_token = first.tokenize("etl", [(TokenType.IP, "198.18.7.9"), (TokenType.DEVICE_ID, DEVICE)])
    return first, second, store, str(ip_token), str(device_token)


def test_a_split_erasure_resumed_on_another_replica_keeps_the_device_id_in_neither_row() -> None:
    first, second, store, ip_token, device_token = _replicas()
    purpose = f"GDPR-2026-801-{DEVICE}"
    assert first.erase("officer", [device_token], purpose) == [None]  # spells its own value
    assert second.erase("officer", [ip_token], purpose) == [None]  # the device is gone; no memory here
    assert [event.purpose for event in store.erase_events] == ["", ""]


def test_an_erasure_keeps_a_usual_reference() -> None:
    first, _, store, ip_token, device_token = _replicas()
    first.erase("officer", [ip_token], "SECOPS-2026-000123:step-2")
    first.erase("officer", [device_token], "GDPR-2026-0042")
    assert [event.purpose for event in store.erase_events] == ["SECOPS-2026-000123:step-2", "GDPR-2026-0042"]
