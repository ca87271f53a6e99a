"""A purpose naming a value stored for another call is withheld; the lookup is cached (attack 14, finding 3).

Over fakes: which values a purpose is looked up by, that a hit withholds (never refuses), that a
distinct purpose costs one lookup per LOOKUP_TTL_SECONDS, and that an erased value is no hit. The
real-vault probes of the report are in tests/integration/test_purpose_stored_values.py.
"""

from __future__ import annotations

from tests.unit.fakes import FakeAuditLog, FakeKeyStore, FakeKeyWrapper, FakeTokenStore
from vault_service.domain.policy import parse_policy
from vault_service.domain.purpose import candidate_values
from vault_service.domain.token_types import TokenType
from vault_service.service.keyring import KeyManager
from vault_service.service.revealing import Revealed
from vault_service.service.stored_values import LOOKUP_TTL_SECONDS, MAX_CANDIDATES, StoredValueLookup
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


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _vault() -> tuple[TokenVault, FakeTokenStore, FakeAuditLog, str, str]:
    store, audit = FakeTokenStore(), FakeAuditLog()
    keys = KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    vault = TokenVault(store, keys, POLICY, audit)
    ip_token, device_token = vault.tokenize("etl", [(TokenType.IP, "198.18.7.9"), (TokenType.DEVICE_ID, DEVICE)])
    return vault, store, audit, str(ip_token), str(device_token)


def test_the_candidates_hold_the_runs_as_written_and_in_upper_case() -> None:
    candidates = candidate_values("GDPR-2026-801-sm-g991b-qwertyui")
    assert {"sm-g991b-qwertyui", "SM-G991B-QWERTYUI", "SMG991BQWERTYUI", "GDPR-2026-801"} <= candidates


def test_a_reveal_naming_a_device_of_another_call_is_served_and_keeps_no_purpose() -> None:
    vault, _, audit, ip_token, _ = _vault()
    (result,) = vault.detokenize("analyst", [ip_token], f"INC-{DEVICE}")
    assert isinstance(result, Revealed)
    assert (audit.events[-1].outcome, audit.events[-1].purpose) == ("ok: 1 revealed, 0 refused", "")


def test_an_erasure_split_in_two_calls_keeps_the_device_id_in_neither_row() -> None:
    vault, store, _, ip_token, device_token = _vault()
    purpose = f"GDPR-2026-801-{DEVICE}"
    assert vault.erase("officer", [ip_token], purpose) == [None]
    assert vault.erase("officer", [device_token], purpose) == [None]
    assert [event.purpose for event in store.erase_events] == ["", ""]


def test_a_reference_naming_no_stored_value_is_kept() -> None:
    vault, _, audit, ip_token, _ = _vault()
    vault.detokenize("analyst", [ip_token], "CASE-2026-0815")
    assert audit.events[-1].purpose == "CASE-2026-0815"


def test_one_lookup_per_distinct_purpose_until_the_answer_is_older_than_the_ttl() -> None:
    vault, store, _, _, _ = _vault()
    clock = _Clock()
    lookup = StoredValueLookup(store, vault._keys, clock=clock)
    for _ in range(5):
        assert lookup.names_a_stored_value("CASE-2026-0815") is False
        assert lookup.names_a_stored_value(f"INC-{DEVICE}") is True
    assert store.holds_any_calls == 2
    clock.now += LOOKUP_TTL_SECONDS
    lookup.names_a_stored_value("CASE-2026-0815")
    assert store.holds_any_calls == 3


def test_an_erased_value_is_no_longer_found() -> None:
    vault, store, _, _, device_token = _vault()
    clock = _Clock()
    lookup = StoredValueLookup(store, vault._keys, clock=clock)
    assert lookup.names_a_stored_value(f"INC-{DEVICE}") is True
    vault.erase("officer", [device_token], "GDPR-2026-0815")
    assert lookup.names_a_stored_value(f"INC-{DEVICE}") is True  # cached: the safe side, for at most the TTL
    clock.now += LOOKUP_TTL_SECONDS
    assert lookup.names_a_stored_value(f"INC-{DEVICE}") is False


def test_a_purpose_of_more_candidates_than_the_bound_is_withheld_without_a_lookup() -> None:
    vault, store, audit, ip_token, _ = _vault()
    many_groups = "-".join("GHIJKLMNOPQRSTUVW")  # 17 one-letter groups: over 512 candidate values
    assert len(candidate_values(many_groups)) > MAX_CANDIDATES
    vault.detokenize("analyst", [ip_token], many_groups)
    assert (audit.events[-1].purpose, store.holds_any_calls) == ("", 0)
