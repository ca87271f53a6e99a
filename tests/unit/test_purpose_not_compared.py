"""A purpose is kept in clear only by a call whose every token's value was opened and compared with it.

Attack 12, finding 1, over fakes: the paths the stack's policy cannot reach (a type the client may
not see, a value that does not open, a token of a type the client may not erase). The real-stack
cases (refusals, erased tokens) are in tests/integration/test_purpose_refused_calls.py.
"""

from __future__ import annotations

import os

import pytest

from tests.unit.fakes import FakeAuditLog, FakeKeyStore, FakeKeyWrapper, FakeTokenStore
from vault_service.domain.crypto import DataKey, seal
from vault_service.domain.errors import PermissionDenied, StoredValueAltered
from vault_service.domain.policy import RevealLevel, parse_policy
from vault_service.domain.purpose import values_spelled_by
from vault_service.domain.token_types import TokenType
from vault_service.domain.tokens import new_tokens
from vault_service.service.keyring import KeyManager
from vault_service.service.ports import StoredToken
from vault_service.service.revealing import reveal
from vault_service.service.vault import TokenVault

DEVICE = "SM-G991B-QWERTYUI"
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


def test_a_reveal_naming_a_token_of_a_type_the_client_may_not_see_keeps_no_purpose() -> None:
    audit = FakeAuditLog()
    vault, ip_token, device_token = _vault(audit)
    purpose = f"GDPR-2026-801-{DEVICE}"  # the device id: never opened for this client, so never compared
    _, hidden = vault.detokenize("ip-reader", [ip_token, device_token], purpose)
    assert isinstance(hidden, PermissionDenied)
    assert (audit.events[-1].outcome, audit.events[-1].purpose) == ("ok: 1 revealed, 1 refused", "")
    vault.detokenize("ip-reader", [ip_token], "GDPR-2026-0801")
    assert audit.events[-1].purpose == "GDPR-2026-0801"  # every value compared: kept


def test_an_erasure_naming_a_token_of_a_type_the_client_may_not_erase_keeps_no_purpose() -> None:
    store = FakeTokenStore()
    vault, ip_token, device_token = _vault(FakeAuditLog(), store)
    outcomes = vault.erase("ip-eraser", [ip_token, device_token, "not-a-token"], f"GDPR-2026-801-{DEVICE}")
    assert outcomes[0] is None and isinstance(outcomes[1], PermissionDenied)
    assert store.erase_events[-1].purpose == ""  # written with the erasure, in its transaction
    (fresh,) = vault.tokenize("etl", [(TokenType.IP, "10.0.0.2")])
    vault.erase("ip-eraser", [str(fresh)], "GDPR-2026-0801")
    assert store.erase_events[-1].purpose == "GDPR-2026-0801"  # every value compared: kept
    vault.erase("ip-eraser", [str(fresh)], "GDPR-2026-0801")
    assert store.erase_events[-1].purpose == ""  # a retry: the erased value cannot be compared


@pytest.mark.parametrize("refused", ["device_token", "junk"])
def test_an_erasure_of_no_erasable_token_keeps_no_purpose(refused: str) -> None:
    audit = FakeAuditLog()
    vault, _, device_token = _vault(audit)
    token = device_token if refused == "device_token" else "not-a-token"
    vault.erase("ip-eraser", [token], f"GDPR-2026-801-{DEVICE}")
    assert (audit.events[-1].outcome, audit.events[-1].purpose) == ("ok: 0 erased", "")


def test_a_value_that_does_not_open_is_not_compared_so_the_purpose_is_withheld() -> None:
    key = DataKey(1, os.urandom(32))
    token, other = new_tokens(TokenType.IP, 2)
    altered = seal(key, TokenType.IP, other, "203.0.113.7")  # another token's ciphertext: does not open
    rows = {token: StoredToken(token, "ip", 1, altered)}
    spelled = values_spelled_by("INC-cb007107")
    checked = reveal(_Keys(key), "a", [token], [TokenType.IP], {TokenType.IP: RevealLevel.PLAIN}, rows, spelled)
    assert isinstance(checked.outcomes[0], StoredValueAltered)
    assert (checked.purpose_withheld, checked.purpose_compared, checked.keeps_purpose) == (False, False, False)


class _Keys:
    def __init__(self, key: DataKey) -> None:
        self._key = key

    def key(self, key_id: int) -> DataKey:
        return self._key
