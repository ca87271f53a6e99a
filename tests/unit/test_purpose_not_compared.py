"""A purpose is kept in clear only by a call whose every value was compared with it.

Attack 12, finding 1, over fakes: the paths the stack's policy cannot reach (a type the client may
not see, a value that does not open, a token of a type the client may not erase). The real-stack
cases (refusals, erased tokens, junk strings and made-up tokens) are in
tests/integration/test_purpose_refused_calls.py.

Review 12, finding 1: withholding reached further than needed. A string that is not a token and a
token never issued name no value the purpose could spell, so they must not blank the purpose (any
client could drop its case reference by adding `x` to a call). A value of a type the client may
not see or erase is opened only to be compared: the caller is shown the same either way.
"""

from __future__ import annotations

import logging
import os

import pytest

from tests.unit.fakes import FakeAuditLog, FakeKeyStore, FakeKeyWrapper, FakeTokenStore
from vault_service.domain.crypto import DataKey, seal
from vault_service.domain.errors import InvalidValue, PermissionDenied, StoredValueAltered, TokenNotFound
from vault_service.domain.policy import RevealLevel, parse_policy
from vault_service.domain.purpose import values_spelled_by
from vault_service.domain.token_types import TokenType
from vault_service.domain.tokens import new_tokens
from vault_service.service.keyring import KeyManager
from vault_service.service.ports import StoredToken
from vault_service.service.revealing import Revealed, reveal
from vault_service.service.vault import TokenVault
from vault_service.service.vault_base import purposes_withheld

DEVICE = "SM-G991B-QWERTYUI"
MADE_UP = "ip_" + "A" * 22
"""A well-formed ip token that was never issued: no row, so no value."""
POLICY = parse_policy(
    {
        "clients": {
            "etl": {"tokenize": ["ip", "device_id"]},
            "ip-reader": {"detokenize": {"ip": "plain", "device_id": "none"}},
            "ip-eraser": {"erase": ["ip"]},
        }
    }
)


def _vault(audit: FakeAuditLog, store: FakeTokenStore | None = None) -> tuple[TokenVault, str, str]:
    """A vault over fakes, and the tokens of an ip and of DEVICE."""
    keys = KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    vault = TokenVault(store or FakeTokenStore(), keys, POLICY, audit)
    ip_token, device_token = vault.tokenize("etl", [(TokenType.IP, "10.0.0.1"), (TokenType.DEVICE_ID, DEVICE)])
    return vault, str(ip_token), str(device_token)


def test_a_junk_string_or_a_token_never_issued_does_not_blank_the_purpose_of_a_reveal() -> None:
    audit = FakeAuditLog()
    vault, ip_token, _ = _vault(audit)
    results = vault.detokenize("ip-reader", [ip_token, "x", MADE_UP], "CASE-2026-0815")
    assert isinstance(results[0], Revealed)
    assert isinstance(results[1], InvalidValue) and isinstance(results[2], TokenNotFound)
    assert (audit.events[-1].outcome, audit.events[-1].purpose) == ("ok: 1 revealed, 2 refused", "CASE-2026-0815")


def test_a_junk_string_or_a_token_never_issued_does_not_blank_the_purpose_of_an_erasure() -> None:
    store = FakeTokenStore()
    vault, ip_token, _ = _vault(FakeAuditLog(), store)
    outcomes = vault.erase("ip-eraser", [ip_token, "x", MADE_UP], "GDPR-2026-0815")
    assert outcomes[0] is None and isinstance(outcomes[1], InvalidValue) and isinstance(outcomes[2], TokenNotFound)
    assert store.erase_events[-1].purpose == "GDPR-2026-0815"


def test_an_erasure_of_junk_only_keeps_its_purpose() -> None:
    audit = FakeAuditLog()
    vault, _, _ = _vault(audit)
    vault.erase("ip-eraser", ["not-a-token"], "GDPR-2026-0815")
    assert (audit.events[-1].outcome, audit.events[-1].purpose) == ("ok: 0 erased", "GDPR-2026-0815")


def test_a_value_of_a_type_the_client_may_not_see_is_compared_without_being_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit = FakeAuditLog()
    vault, ip_token, device_token = _vault(audit)
    # A purpose that spells the device id: compared with it (opened only for that), so withheld.
    withheld = purposes_withheld()
    with caplog.at_level(logging.WARNING, logger="vault_service.service.vault"):
        right = vault.detokenize("ip-reader", [ip_token, device_token], f"GDPR-2026-801-{DEVICE}")
    assert (audit.events[-1].outcome, audit.events[-1].purpose) == ("ok: 1 revealed, 1 refused", "")
    # Counted as every withhold is, never logged (review 15, finding 2: a log line told the cause).
    assert purposes_withheld() == withheld + 1 and caplog.text == ""
    # One that does not: kept. The caller is shown the same PermissionDenied either way.
    wrong = vault.detokenize("ip-reader", [ip_token, device_token], "GDPR-2026-0801")
    assert (audit.events[-1].outcome, audit.events[-1].purpose) == ("ok: 1 revealed, 1 refused", "GDPR-2026-0801")
    assert [type(r) for r in right] == [type(r) for r in wrong] == [Revealed, PermissionDenied]
    assert str(right[1]) == str(wrong[1])
    assert audit.events[-1].revealed == audit.events[-2].revealed  # only the ip token is named as revealed


def test_an_erased_value_of_a_type_the_client_may_not_see_withholds_the_purpose() -> None:
    audit = FakeAuditLog()
    store = FakeTokenStore()
    vault, ip_token, device_token = _vault(audit, store)
    store.erased.add(device_token)  # the value is gone: nothing to compare the purpose with
    (_, hidden) = vault.detokenize("ip-reader", [ip_token, device_token], "GDPR-2026-0801")
    assert isinstance(hidden, PermissionDenied)
    assert audit.events[-1].purpose == ""


def test_an_erasure_naming_a_token_of_a_type_the_client_may_not_erase_compares_its_value() -> None:
    store = FakeTokenStore()
    vault, ip_token, device_token = _vault(FakeAuditLog(), store)
    outcomes = vault.erase("ip-eraser", [ip_token, device_token], f"GDPR-2026-801-{DEVICE}")
    assert outcomes[0] is None and isinstance(outcomes[1], PermissionDenied)
    assert store.erase_events[-1].purpose == ""  # it spells the device id: withheld
    assert store.erased == {ip_token}  # opened only for the comparison: not erased
    (fresh,) = vault.tokenize("etl", [(TokenType.IP, "10.0.0.2")])
    vault.erase("ip-eraser", [str(fresh), device_token], "GDPR-2026-0801")
    assert store.erase_events[-1].purpose == "GDPR-2026-0801"  # every value compared, none spelled: kept
    vault.erase("ip-eraser", [str(fresh)], "GDPR-2026-0801")
    assert store.erase_events[-1].purpose == ""  # a retry: the erased value cannot be compared


def test_a_value_that_does_not_open_is_not_compared_so_the_purpose_is_withheld() -> None:
    key = DataKey(1, os.urandom(32))
    token, other = new_tokens(TokenType.IP, 2)
    altered = seal(key, TokenType.IP, other, "203.0.113.7")  # another token's ciphertext: does not open
    rows = {token: StoredToken(token, "ip", 1, altered)}
    spelled = values_spelled_by("INC-cb007107")
    checked = reveal(_Keys(key), "a", [token], [TokenType.IP], {TokenType.IP: RevealLevel.PLAIN}, rows, spelled)
    assert isinstance(checked.outcomes[0], StoredValueAltered)
    assert (checked.purpose_withheld, checked.purpose_compared, checked.keeps_purpose) == (False, False, False)


def test_a_value_of_a_type_at_level_none_that_does_not_open_withholds_and_still_shows_permission_denied() -> None:
    key = DataKey(1, os.urandom(32))
    token, other = new_tokens(TokenType.DEVICE_ID, 2)
    altered = seal(key, TokenType.DEVICE_ID, other, DEVICE)
    rows = {token: StoredToken(token, "device_id", 1, altered)}
    levels = {TokenType.DEVICE_ID: RevealLevel.NONE}
    checked = reveal(_Keys(key), "a", [token], [TokenType.DEVICE_ID], levels, rows, values_spelled_by("INC-4821"))
    assert isinstance(checked.outcomes[0], PermissionDenied)  # as before: nothing of the value's state is shown
    assert checked.keeps_purpose is False


class _Keys:
    def __init__(self, key: DataKey) -> None:
        self._key = key

    def key(self, key_id: int) -> DataKey:
        return self._key
