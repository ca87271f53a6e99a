"""Batch steps of Tokenize: the cache's batch calls, array literals, and the use case over columns."""

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.fakes import FakeAuditLog, FakeKeyStore, FakeKeyWrapper, FakeTokenStore
from vault_service.adapters.postgres.sql_arrays import bytea_array, int_array, text_array
from vault_service.domain.errors import InvalidValue, PermissionDenied
from vault_service.domain.policy import parse_policy
from vault_service.domain.token_types import TokenType
from vault_service.service.keyring import KeyManager
from vault_service.service.token_cache import TokenCache
from vault_service.service.vault import TokenVault

IP, DEVICE = TokenType.IP, TokenType.DEVICE_ID


# -- the cache ---------------------------------------------------------------------------------


@given(st.lists(st.text(max_size=20), max_size=20), st.sampled_from(TokenType))
def test_keys_are_the_key_of_each_value(values: list[str], token_type: TokenType) -> None:
    cache = TokenCache(10)
    assert cache.keys(token_type, values) == [cache.key(token_type, v) for v in values]


@given(st.lists(st.integers(0, 59), max_size=80), st.lists(st.integers(0, 59), max_size=40))
def test_batch_puts_and_gets_leave_the_cache_as_one_by_one_calls_do(puts: list[int], gets: list[int]) -> None:
    batched, single = TokenCache(16), TokenCache(16)
    keys = [batched.key(IP, f"10.0.0.{n}") for n in range(60)]
    for start in range(0, len(puts), 7):
        chunk = puts[start : start + 7]
        batched.put_many([keys[n] for n in chunk], [f"ip_{n}" for n in chunk], batched.epoch)
        for n in chunk:
            single.put(keys[n], f"ip_{n}", single.epoch)
    assert batched.get_many([keys[n] for n in gets]) == [single.get(keys[n]) for n in gets]
    assert (batched.hits, batched.misses, len(batched)) == (single.hits, single.misses, len(single))
    assert [batched.get(k) for k in keys] == [single.get(k) for k in keys]


def test_a_batch_put_from_before_an_erasure_is_not_kept() -> None:
    cache = TokenCache(100)
    keys = cache.keys(IP, ["192.0.2.1", "192.0.2.2"])
    began = cache.epoch
    cache.clear()
    cache.put_many(keys, ["ip_a", "ip_b"], began)
    assert cache.get_many(keys) == [None, None]


def test_a_batch_get_keeps_what_it_finds_in_the_old_half() -> None:
    cache = TokenCache(6)  # halves of 3
    keys = cache.keys(IP, ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"])
    cache.put_many(keys[:3], ["ip_1", "ip_2", "ip_3"], cache.epoch)  # a full young half: now the old one
    assert cache.get_many(keys[:2]) == ["ip_1", "ip_2"]  # found in the old half: moved to the young one
    cache.put_many(keys[3:], ["ip_4"], cache.epoch)  # a turnover: the old half with ip_3 is dropped
    assert cache.get_many(keys) == ["ip_1", "ip_2", None, "ip_4"]


# -- array literals ----------------------------------------------------------------------------


def _bytea_reference(values: Sequence[bytes | None]) -> str:
    return "{" + ",".join('"\\\\x' + v.hex() + '"' if v is not None else "NULL" for v in values) + "}"


def _text_reference(values: Sequence[str]) -> str:
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


@given(st.lists(st.binary(max_size=40) | st.none(), max_size=12))
def test_bytea_literals_are_as_one_element_at_a_time_made_them(values: list[bytes | None]) -> None:
    assert bytea_array(values) == _bytea_reference(values)


@given(st.lists(st.text(st.sampled_from('ab"\\{},x '), max_size=8), max_size=12))
def test_text_literals_are_as_one_element_at_a_time_made_them(values: list[str]) -> None:
    assert text_array(values) == _text_reference(values)


@given(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=12))
def test_int_literals_list_each_value(values: list[int]) -> None:
    assert int_array(values) == "{" + ",".join(str(v) for v in values) + "}"


# -- the use case over columns -----------------------------------------------------------------

POLICY = parse_policy({"clients": {"etl": {"tokenize": ["ip", "device_id"]}, "ip-only": {"tokenize": ["ip"]}}})


def make_vault(store: FakeTokenStore | None = None, cache: int = 1000) -> TokenVault:
    keys = KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    return TokenVault(store or FakeTokenStore(), keys, POLICY, FakeAuditLog(), TokenCache(cache))


def _shown(outcome: object) -> object:
    return outcome if isinstance(outcome, str) else (type(outcome), str(outcome))


def test_columns_get_the_tokens_items_get() -> None:
    vault = make_vault()
    ips = ["10.0.0.1", " 10.0.0.2", "10.0.0.1", "::ffff:10.0.0.3", "bad", "10.0.0.2"]
    devices = ["d-1", "10.0.0.1", "\x00"]
    ip_column, device_column, none_column = vault.tokenize_columns("etl", [(IP, ips), (DEVICE, devices), (None, ["x"])])
    items = vault.tokenize("etl", [(IP, v) for v in ips] + [(DEVICE, v) for v in devices])
    assert [_shown(o) for o in ip_column + device_column] == [_shown(o) for o in items]
    assert ip_column[0] == ip_column[2] and ip_column[1] == ip_column[5] and len(set(ip_column[:4])) == 3
    assert isinstance(ip_column[4], InvalidValue) and isinstance(device_column[2], InvalidValue)
    assert device_column[1] not in ip_column  # the same text as another type: another token
    assert isinstance(none_column[0], InvalidValue)


def test_columns_of_one_type_are_looked_up_together() -> None:
    store = FakeTokenStore()
    vault = make_vault(store, cache=0)
    first, second = vault.tokenize_columns("etl", [(IP, ["10.1.0.1", "10.1.0.2"]), (IP, ["10.1.0.2", "10.1.0.3"])])
    assert first[1] == second[0]
    assert len(store.rows) == 3
    (event,) = vault.meter.flush()  # metered for the whole call
    assert (event.item_count, event.outcome) == (4, "ok: 4 values, 3 new tokens")


def test_a_batch_of_hits_misses_stored_and_new_values_gets_every_token_right() -> None:
    store = FakeTokenStore()
    vault = make_vault(store)
    stored = vault.tokenize_columns("etl", [(IP, ["10.2.0.1", "10.2.0.2"])])[0]
    vault.cache.clear()
    cached = vault.tokenize_columns("etl", [(IP, ["10.2.0.3"])])[0]
    (batch,) = vault.tokenize_columns("etl", [(IP, ["10.2.0.4", "10.2.0.1", "10.2.0.3", " 10.2.0.2", "nope"])])
    assert batch[1:4] == [stored[0], cached[0], stored[1]]
    assert isinstance(batch[0], str) and batch[0] not in stored + cached
    assert isinstance(batch[4], InvalidValue)
    assert len(store.rows) == 4


def test_a_type_the_client_may_not_tokenize_is_refused_per_value() -> None:
    ips, devices = make_vault().tokenize_columns("ip-only", [(IP, ["10.3.0.1"]), (DEVICE, ["d-1", "d-2"])])
    assert isinstance(ips[0], str)
    assert [type(o) for o in devices] == [PermissionDenied, PermissionDenied]


@pytest.mark.parametrize("cache", [0, 1000])
def test_a_column_of_only_invalid_values_reaches_no_store(cache: int) -> None:
    store = FakeTokenStore()
    (outcomes,) = make_vault(store, cache).tokenize_columns("etl", [(IP, ["", "x", "1.2.3"])])
    assert all(isinstance(o, InvalidValue) for o in outcomes) and not store.rows
