"""TokenVault use cases over fakes: stability, per-item errors, authorization, audit."""

from collections.abc import Sequence

import pytest

from tests.unit.fakes import FakeAuditLog, FakeKeyStore, FakeKeyWrapper, FakeTokenStore
from tests.unit.vault_policies import POLICY
from vault_service.domain.errors import InvalidRequest, InvalidValue, PermissionDenied, RateLimited, TokenNotFound
from vault_service.domain.policy import RevealLevel, parse_policy
from vault_service.domain.token_types import TokenType
from vault_service.service.keyring import KeyManager
from vault_service.service.ports import FoundToken
from vault_service.service.revealing import Revealed
from vault_service.service.token_cache import TokenCache
from vault_service.service.vault import TokenVault

POLICY_WITH_ERASE = parse_policy({"clients": {"etl": {"tokenize": ["ip"]}, "officer": {"erase": ["ip"]}}})


def make_vault(audit: FakeAuditLog | None = None, store: FakeTokenStore | None = None) -> TokenVault:
    keys = KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    return TokenVault(store or FakeTokenStore(), keys, POLICY, audit or FakeAuditLog())


def test_equal_values_get_equal_tokens_and_different_values_different_ones() -> None:
    vault = make_vault()
    first = vault.tokenize("etl", [(TokenType.IP, "10.0.0.1"), (TokenType.IP, "10.0.0.2"), (TokenType.IP, "10.0.0.1")])
    again = vault.tokenize("etl", [(TokenType.IP, " 10.0.0.1")])
    assert first[0] == first[2] == again[0]
    assert first[0] != first[1]


def test_same_value_of_different_types_gets_different_tokens() -> None:
    vault = make_vault()
    ip_token, device_token = vault.tokenize("etl", [(TokenType.IP, "1.2.3.4"), (TokenType.DEVICE_ID, "1.2.3.4")])
    assert str(ip_token).startswith("ip_") and str(device_token).startswith("dev_")


def test_one_bad_item_does_not_fail_the_batch() -> None:
    vault = make_vault()
    outcomes = vault.tokenize("etl", [(TokenType.IP, "not-an-ip"), (TokenType.IP, "10.0.0.1"), (None, "x")])
    assert isinstance(outcomes[0], InvalidValue)
    assert isinstance(outcomes[1], str)
    assert isinstance(outcomes[2], InvalidValue)


def test_type_not_allowed_is_a_per_item_permission_error() -> None:
    outcomes = make_vault().tokenize("ip-only", [(TokenType.DEVICE_ID, "1"), (TokenType.IP, "10.0.0.1")])
    assert isinstance(outcomes[0], PermissionDenied) and isinstance(outcomes[1], str)


def test_client_without_tokenize_permission_is_refused_whole() -> None:
    with pytest.raises(PermissionDenied):
        make_vault().tokenize("analyst", [(TokenType.IP, "10.0.0.1")])


def test_detokenize_reveals_per_policy_and_audits_counts_not_values() -> None:
    audit = FakeAuditLog()
    vault = make_vault(audit)
    ip_token, device_token = vault.tokenize("etl", [(TokenType.IP, "10.0.0.1"), (TokenType.DEVICE_ID, "593-47-5928")])
    results = vault.detokenize("analyst", [str(ip_token), str(device_token), "ip_" + "A" * 22, "junk"], "CASE-42")
    assert results[0] == Revealed(TokenType.IP, "10.0.0.1", RevealLevel.PLAIN)
    assert results[1] == Revealed(TokenType.DEVICE_ID, "***-**-5928", RevealLevel.MASKED)
    assert isinstance(results[2], TokenNotFound)
    assert isinstance(results[3], InvalidValue)
    (event,) = audit.events
    # A token never issued and a string that is not a token name no value: the purpose is kept.
    assert (event.client, event.purpose, event.item_count) == ("analyst", "CASE-42", 4)
    assert "10.0.0.1" not in repr(event) and str(ip_token) not in repr(event)
    vault.detokenize("analyst", [str(ip_token), str(device_token)], "CASE-42")
    assert audit.events[-1].purpose == "CASE-42"  # every value opened and compared: kept


def test_refused_detokenize_is_audited_too() -> None:
    audit = FakeAuditLog()
    with pytest.raises(PermissionDenied):
        make_vault(audit).detokenize("etl", ["ip_" + "A" * 22], "curious")
    assert audit.events[0].outcome.startswith("refused") and audit.events[0].client == "etl"


def test_a_purpose_carrying_pii_is_not_kept_when_the_call_is_refused_for_another_reason() -> None:
    # The client may not detokenize at all, so the call fails before its purpose is checked.
    audit = FakeAuditLog()
    with pytest.raises(PermissionDenied):
        make_vault(audit).detokenize("etl", ["ip_" + "A" * 22], "re 203.0.113.7")
    (event,) = audit.events
    assert (event.outcome, event.purpose) == ("refused: PermissionDenied", "")
    with pytest.raises(PermissionDenied):
        make_vault(audit).detokenize("etl", ["ip_" + "A" * 22], "INC-4821")
    assert audit.events[-1].purpose == ""  # nor a fit one: no value was compared with it (attack 12, finding 1)


def test_detokenize_requires_a_purpose() -> None:
    with pytest.raises(InvalidRequest, match="purpose"):
        make_vault().detokenize("analyst", ["ip_" + "A" * 22], "  ")


def test_a_purpose_with_control_characters_is_refused_and_audited_without_them() -> None:
    audit = FakeAuditLog()
    with pytest.raises(InvalidRequest, match="printable"):
        make_vault(audit).detokenize("analyst", ["ip_" + "A" * 22], "case\x00 42\nforged line")
    (event,) = audit.events
    assert event.outcome == "refused: InvalidRequest"
    assert event.purpose == ""  # a refused purpose is not kept: it may be what made it unfit


def test_nothing_is_revealed_when_the_audit_cannot_be_written() -> None:
    store = FakeTokenStore()
    (token,) = make_vault(store=store).tokenize("etl", [(TokenType.IP, "10.0.0.1")])
    failing = make_vault(FakeAuditLog(fail=True), store)
    with pytest.raises(OSError):
        failing.detokenize("analyst", [str(token)], "CASE-1")


def test_keys_are_created_once_and_reused_by_a_second_replica() -> None:
    store, wrapper = FakeKeyStore(), FakeKeyWrapper()
    first = KeyManager(store, wrapper).start()
    second = KeyManager(store, wrapper).start()
    assert len(store.keys) == 3  # encryption, fingerprint, audit
    assert first.fingerprint_key.material == second.fingerprint_key.material


class CountingStore(FakeTokenStore):
    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def find_by_fingerprints(self, token_type: str, fingerprints: Sequence[bytes]) -> dict[bytes, FoundToken]:
        self.lookups += 1
        return super().find_by_fingerprints(token_type, fingerprints)


def test_repeated_values_are_answered_from_the_cache_and_erasure_clears_it() -> None:
    store = CountingStore()
    keys = KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    vault = TokenVault(store, keys, POLICY_WITH_ERASE, FakeAuditLog(), TokenCache(100))
    (first,) = vault.tokenize("etl", [(TokenType.IP, "10.9.9.9")])
    lookups = store.lookups
    (again,) = vault.tokenize("etl", [(TokenType.IP, "10.9.9.9")])
    assert again == first and store.lookups == lookups and vault.cache.hits == 1
    vault.erase("officer", [str(first)], "GDPR-1")
    (after,) = vault.tokenize("etl", [(TokenType.IP, "10.9.9.9")])
    assert after != first and store.lookups > lookups


def test_rotated_keys_are_picked_up_by_a_replica_that_had_not_seen_them() -> None:
    key_store, wrapper = FakeKeyStore(), FakeKeyWrapper()
    tokens = FakeTokenStore(key_store)
    stale_keys, fresh_keys = KeyManager(key_store, wrapper), KeyManager(key_store, wrapper)
    stale_keys.start()
    fresh_keys.start()
    stale = TokenVault(tokens, stale_keys, POLICY, FakeAuditLog())
    key_store.add_key("encryption", wrapper.new_data_key()[1])  # rotated by someone else
    (token,) = stale.tokenize("etl", [(TokenType.IP, "10.8.8.8")])
    assert tokens.rows[str(token)].dek_id == key_store.generation().encryption_id
    fresh = TokenVault(tokens, fresh_keys, POLICY, FakeAuditLog())
    (revealed,) = fresh.detokenize("analyst", [str(token)], "CASE-9")  # a DEK it never loaded
    assert isinstance(revealed, Revealed) and revealed.value == "10.8.8.8"


def test_outdated_wrappings_are_rewrapped_to_the_newest_kek_version() -> None:
    key_store, wrapper = FakeKeyStore(), FakeKeyWrapper()
    keys = KeyManager(key_store, wrapper)
    keys.start()
    wrapper.version = 3
    assert keys.rewrap_outdated() == 3  # encryption, fingerprint and audit keys
    assert {k.kek_version for k in key_store.load_keys()} == {3}
    assert keys.rewrap_outdated() == 0


def test_erasure_past_the_clients_erase_limit_is_refused_whole_and_audited() -> None:
    # Erasure cannot be undone: metered like reveals, and the default applies to a client without
    # limits of its own (limits fail closed).
    policy = parse_policy(
        {
            "defaults": {"limits": {"erase_per_second": 0.001, "erase_burst": 2}},
            "clients": {"etl": {"tokenize": ["ip"]}, "officer": {"erase": ["ip"]}},
        }
    )
    audit, store = FakeAuditLog(), FakeTokenStore()
    keys = KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    vault = TokenVault(store, keys, policy, audit)
    tokens = [str(t) for t in vault.tokenize("etl", [(TokenType.IP, f"10.7.0.{n}") for n in range(1, 5)])]
    with pytest.raises(RateLimited, match="erase burst limit of 2"):
        vault.erase("officer", tokens[:3], "GDPR-7")
    assert vault.erase("officer", tokens[:2], "GDPR-7") == [None, None]
    with pytest.raises(RateLimited, match=r"may erase 3\.6 values/hour") as later:
        vault.erase("officer", tokens[2:3], "GDPR-7")
    assert later.value.retry_after > 900
    assert store.erased == set(tokens[:2])  # nothing erased by a refused call
    refusals = [e for e in audit.events if e.outcome == "refused: RateLimited"]
    assert [(e.client, e.action, e.item_count, e.purpose) for e in refusals] == [
        ("officer", "erase", 3, ""),  # refused before opening (opening is what the limit meters): withheld
        ("officer", "erase", 1, ""),
    ]


def test_the_erase_limit_is_kept_by_the_store_so_replicas_and_restarts_share_one_bucket() -> None:
    # Erasure cannot be undone: a second process (another replica, or this one restarted) must
    # not start with a full bucket of its own (vault.erase_budget, migration 0016).
    policy = parse_policy(
        {
            "defaults": {"limits": {"erase_per_second": 0.001, "erase_burst": 2}},
            "clients": {"etl": {"tokenize": ["ip"]}, "officer": {"erase": ["ip"]}},
        }
    )
    store, keys = FakeTokenStore(), KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    first, second = TokenVault(store, keys, policy, FakeAuditLog()), TokenVault(store, keys, policy, FakeAuditLog())
    tokens = [str(t) for t in first.tokenize("etl", [(TokenType.IP, f"10.8.0.{n}") for n in range(1, 5)])]
    assert first.erase("officer", tokens[:2], "GDPR-8") == [None, None]
    with pytest.raises(RateLimited, match=r"may erase 3\.6 values/hour"):
        second.erase("officer", tokens[2:3], "GDPR-8")
    assert store.erased == set(tokens[:2])


def test_a_store_without_shared_erase_buckets_still_meters_erasure_per_process() -> None:
    # A service started before migration 0016 ran: the limit holds, per process, as before it.
    policy = parse_policy(
        {
            "defaults": {"limits": {"erase_per_second": 0.001, "erase_burst": 2}},
            "clients": {"etl": {"tokenize": ["ip"]}, "officer": {"erase": ["ip"]}},
        }
    )
    store, keys = FakeTokenStore(), KeyManager(FakeKeyStore(), FakeKeyWrapper())
    store.has_budgets = False
    keys.start()
    vault = TokenVault(store, keys, policy, FakeAuditLog())
    tokens = [str(t) for t in vault.tokenize("etl", [(TokenType.IP, f"10.9.0.{n}") for n in range(1, 5)])]
    assert vault.erase("officer", tokens[:2], "GDPR-9") == [None, None]
    with pytest.raises(RateLimited, match=r"may erase 3\.6 values/hour"):
        vault.erase("officer", tokens[2:3], "GDPR-9")
