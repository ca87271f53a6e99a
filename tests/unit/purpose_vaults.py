"""A vault over fakes holding one ip and one device id, for the tests of what a purpose may name."""

from __future__ import annotations

from tests.unit.fakes import FakeAuditLog, FakeKeyStore, FakeKeyWrapper, FakeTokenStore
from vault_service.domain.policy import parse_policy
from vault_service.domain.token_types import TokenType
from vault_service.service.keyring import KeyManager
from vault_service.service.vault import TokenVault

DEVICE = "SM-G991B-QWERTYUI"
POLICY = parse_policy(
    {
        "clients": {
            "etl": {"tokenize": ["ip", "device_id"]},
            "analyst": {"detokenize": {"ip": "masked", "device_id": "masked"}},
            "officer": {"erase": ["ip", "device_id"]},
        }
    }
)


def vault_with_two_tokens() -> tuple[TokenVault, FakeTokenStore, FakeAuditLog, str, str]:
    """The vault, its store and audit log, and the tokens of 198.18.7.9 and DEVICE."""
    store, audit = FakeTokenStore(), FakeAuditLog()
    keys = KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    vault = TokenVault(store, keys, POLICY, audit)
    ip_token, device_token = vault.tokenize("etl", [(TokenType.IP, "198.18.7.9"), (TokenType.DEVICE_ID, DEVICE)])
    return vault, store, audit, str(ip_token), str(device_token)
