"""Detokenize's batched paths give, per token, exactly what the per-token path gives.

The vault opens values in groups of one data key and one type, parses a call's tokens with one
expression when they share a type, and the server cuts its columns in C; each is checked here
against the plain per-token reference on mixed calls (several keys, types, levels, failures).
"""

from __future__ import annotations

import os
import random

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from tests.unit.fakes import FakeAuditLog, FakeKeyStore, FakeKeyWrapper, FakeTokenStore
from tokenvault_api.v1 import vault_pb2
from vault_service.domain.crypto import DataKey, SealBroken, open_sealed, open_sealed_many, seal
from vault_service.domain.errors import (
    InvalidValue,
    KeysUnavailable,
    PermissionDenied,
    StoredValueAltered,
    TokenNotFound,
    VaultError,
)
from vault_service.domain.masking import mask
from vault_service.domain.policy import RevealLevel, parse_policy
from vault_service.domain.purpose import PurposeHoldsOwnValue, values_spelled_by
from vault_service.domain.token_types import TokenType
from vault_service.domain.tokens import new_tokens, type_of_token, types_of_tokens
from vault_service.entrypoints.columns import revealed_lists, to_results
from vault_service.entrypoints.metrics import count_outcomes
from vault_service.entrypoints.status import status_of
from vault_service.service.keyring import KeyManager
from vault_service.service.ports import StoredToken
from vault_service.service.revealing import DetokenizeOutcome, Revealed, RevealedCall, reveal, reveal_hash
from vault_service.service.vault import TokenVault

POLICY = parse_policy(
    {
        "clients": {
            "etl": {"tokenize": ["ip", "device_id"]},
            "analyst": {"detokenize": {"ip": "plain", "device_id": "masked"}},
            "ip-reader": {"detokenize": {"ip": "plain"}},
        }
    }
)


def test_open_sealed_many_opens_what_open_sealed_opens_and_marks_what_it_refuses() -> None:
    key, other = DataKey(1, os.urandom(32)), DataKey(2, os.urandom(32))
    tokens = new_tokens(TokenType.IP, 6)
    sealed = [seal(key, TokenType.IP, t, f"10.0.0.{i}") for i, t in enumerate(tokens)]
    sealed[1] = sealed[2]  # swapped onto another token
    sealed[3] = seal(other, TokenType.IP, tokens[3], "10.0.0.3")  # another key
    sealed[4] = sealed[4][:10]  # too short to hold a nonce
    sealed[5] = sealed[5][:-1] + bytes([sealed[5][-1] ^ 1])  # tampered tag
    assert open_sealed_many(key, TokenType.IP, tokens, sealed) == ["10.0.0.0", None, "10.0.0.2", None, None, None]
    for token, box in zip(tokens[1:2] + tokens[3:], sealed[1:2] + sealed[3:], strict=True):
        with pytest.raises(SealBroken):
            open_sealed(key, TokenType.IP, token, box)
    # The binding holds the type: an ip value does not open as a device_id.
    assert open_sealed_many(key, TokenType.DEVICE_ID, tokens[:1], sealed[:1]) == [None]


@given(
    st.lists(
        st.sampled_from(["ip_", "dev_", "ipx_", "", "ip"]).flatmap(
            lambda prefix: st.text(alphabet="AZaz09_-\n$ é", min_size=20, max_size=24).map(lambda r: prefix + r)
        ),
        max_size=8,
    )
)
def test_types_of_tokens_equals_parsing_each_token(texts: list[str]) -> None:
    assert types_of_tokens(texts) == [type_of_token(t) for t in texts]


def test_types_of_tokens_of_one_type_and_of_tokens_hiding_newlines() -> None:
    ips, devices = new_tokens(TokenType.IP, 50), new_tokens(TokenType.DEVICE_ID, 50)
    assert types_of_tokens(ips) == [TokenType.IP] * 50
    assert types_of_tokens(devices) == [TokenType.DEVICE_ID] * 50
    assert types_of_tokens(ips + devices) == [TokenType.IP] * 50 + [TokenType.DEVICE_ID] * 50
    # Two well-formed tokens in one text joined by a newline are one malformed token.
    assert types_of_tokens([ips[0] + "\n" + ips[1]]) == [None]
    assert types_of_tokens([ips[0], ips[1] + "\n"]) == [TokenType.IP, None]
    assert types_of_tokens([]) == []


def _reference(vault: TokenVault, store: FakeTokenStore, client: str, token: str) -> DetokenizeOutcome:
    """What one token reveals, decided by the per-token rules (not the batched code)."""
    token_type = type_of_token(token)
    if token_type is None:
        return InvalidValue("")
    level = POLICY.reveal_level(client, token_type)
    if level is RevealLevel.NONE:
        return PermissionDenied("")
    row = store.rows.get(token)
    if row is None or token in store.erased:
        return TokenNotFound("")
    try:
        value = open_sealed(vault._keys.key(row.dek_id), token_type, token, row.sealed)
    except SealBroken:
        return StoredValueAltered("")
    return Revealed(token_type, value if level is RevealLevel.PLAIN else mask(token_type, value), level)


def _same(got: DetokenizeOutcome, expected: DetokenizeOutcome) -> bool:
    if isinstance(expected, VaultError):
        return type(got) is type(expected)
    return type(got) is Revealed and got == expected


@pytest.mark.parametrize("client", ["analyst", "ip-reader"])
def test_a_mixed_call_reveals_each_token_as_alone_and_audits_the_revealed_in_order(client: str) -> None:
    key_store, wrapper = FakeKeyStore(), FakeKeyWrapper()
    store, audit = FakeTokenStore(key_store), FakeAuditLog()
    keys = KeyManager(key_store, wrapper)
    keys.start()
    vault = TokenVault(store, keys, POLICY, audit)
    first = vault.tokenize("etl", [(TokenType.IP, f"10.0.0.{i}") for i in range(6)])
    first += vault.tokenize("etl", [(TokenType.DEVICE_ID, f"device-{i:04d}-x") for i in range(4)])
    key_store.add_key("encryption", wrapper.new_data_key()[1])  # rotated: later values under a second DEK
    keys.refresh()
    second = vault.tokenize("etl", [(TokenType.IP, f"10.1.0.{i}") for i in range(6)])
    second += vault.tokenize("etl", [(TokenType.DEVICE_ID, f"device-{i:04d}-y") for i in range(4)])
    issued = [str(t) for t in first + second]
    assert len({store.rows[t].dek_id for t in issued}) == 2
    broken, erased = issued[2], issued[13]
    store.rows[broken] = store.rows[broken]._replace(sealed=store.rows[issued[3]].sealed)  # swapped ciphertext
    store.erased.add(erased)
    tokens = [*issued, "ip_" + "A" * 22, "junk", "dev_" + "B" * 22, issued[0]]  # a repeat too
    random.Random(7).shuffle(tokens)

    outcomes = vault.detokenize(client, tokens, "CASE-7")

    expected = [_reference(vault, store, client, t) for t in tokens]
    assert [type(o) for o in outcomes] == [type(e) for e in expected]
    assert all(_same(got, want) for got, want in zip(outcomes, expected, strict=True))
    assert isinstance(outcomes[tokens.index(broken)], StoredValueAltered)
    (event,) = audit.events
    audit_key = keys.ring.audit_key
    assert list(event.revealed) == [
        reveal_hash(audit_key, t) for t, e in zip(tokens, expected, strict=True) if isinstance(e, Revealed)
    ]
    assert event.outcome == f"ok: {len(event.revealed)} revealed, {len(tokens) - len(event.revealed)} refused"


def test_a_call_whose_tokens_all_reveal_gives_the_same_outcomes_as_one_call_per_token() -> None:
    store = FakeTokenStore()
    keys = KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    vault = TokenVault(store, keys, POLICY, FakeAuditLog())
    tokens = [str(t) for t in vault.tokenize("etl", [(TokenType.IP, f"10.2.0.{i}") for i in range(20)])]
    together = vault.detokenize("analyst", tokens, "CASE-8")
    alone = [vault.detokenize("analyst", [t], "CASE-8")[0] for t in tokens]
    assert together == alone
    assert [type(o) for o in together] == [Revealed] * 20
    assert together[5] == Revealed(TokenType.IP, "10.2.0.5", RevealLevel.PLAIN)
    # One key and one type, with failures among them: the values still land at their positions.
    some = vault.detokenize("analyst", ["junk", tokens[3], "ip_" + "C" * 22, tokens[4]], "CASE-8")
    assert [type(o) for o in some] == [InvalidValue, Revealed, TokenNotFound, Revealed]
    assert some[1] == alone[3] and some[3] == alone[4]


MIXED: list[DetokenizeOutcome] = [
    Revealed(TokenType.IP, "192.0.2.7", RevealLevel.PLAIN),
    TokenNotFound("no value"),
    Revealed(TokenType.DEVICE_ID, "***-**-5928", RevealLevel.MASKED),
]


def test_the_columns_of_a_call_where_every_token_revealed() -> None:
    lists = revealed_lists([MIXED[0], MIXED[2], MIXED[0]])
    assert lists.values == ["192.0.2.7", "***-**-5928", "192.0.2.7"]
    assert lists.types == [vault_pb2.TOKEN_TYPE_IP, vault_pb2.TOKEN_TYPE_DEVICE_ID, vault_pb2.TOKEN_TYPE_IP]
    assert lists.reveals == [vault_pb2.REVEAL_PLAIN, vault_pb2.REVEAL_MASKED, vault_pb2.REVEAL_PLAIN]
    assert lists.errors == {}
    assert len(to_results(lists)) == 3


def test_the_columns_of_a_call_with_failures_hold_empty_rows_there() -> None:
    lists = revealed_lists(MIXED)
    assert lists.values == ["192.0.2.7", "", "***-**-5928"]
    assert lists.types == [vault_pb2.TOKEN_TYPE_IP, vault_pb2.TOKEN_TYPE_UNSPECIFIED, vault_pb2.TOKEN_TYPE_DEVICE_ID]
    assert lists.reveals == [vault_pb2.REVEAL_PLAIN, vault_pb2.REVEAL_UNSPECIFIED, vault_pb2.REVEAL_MASKED]
    assert list(lists.errors) == [1] and lists.error_codes() == ["NOT_FOUND"]


def test_a_revealed_value_at_a_level_that_reveals_nothing_is_a_bug_not_a_column() -> None:
    with pytest.raises(KeyError):
        revealed_lists([Revealed(TokenType.IP, "192.0.2.7", RevealLevel.NONE)])
    with pytest.raises(KeyError):
        revealed_lists([MIXED[1], Revealed(TokenType.IP, "192.0.2.7", RevealLevel.NONE)])


def test_detokenize_items_are_counted_by_code_call_after_call() -> None:
    def sample(code: str) -> float:
        value = REGISTRY.get_sample_value("tokenvault_grpc_items_total", {"method": "DetokenizeProbe", "code": code})
        return value or 0.0

    for _ in range(2):  # the second call goes through the counters kept from the first
        count_outcomes("DetokenizeProbe", 3, ["NOT_FOUND", "PERMISSION_DENIED", "NOT_FOUND"])
    count_outcomes("DetokenizeProbe", 0, [])
    assert (sample("OK"), sample("NOT_FOUND"), sample("PERMISSION_DENIED")) == (6.0, 4.0, 2.0)


class _Keys:
    def __init__(self, loaded: dict[int, DataKey]) -> None:
        self._loaded = loaded

    def key(self, key_id: int) -> DataKey:
        if key_id not in self._loaded:
            raise KeysUnavailable(f"data key {key_id} is not loaded")
        return self._loaded[key_id]


def test_a_value_altered_in_the_database_is_data_loss_and_a_missing_key_is_unavailable() -> None:
    # A swapped ciphertext does not open with its (loaded) key: retrying cannot help, so the
    # caller is told DATA_LOSS and to report it; a key that is not loaded is UNAVAILABLE, retry later.
    key, missing = DataKey(1, os.urandom(32)), 2
    tokens = new_tokens(TokenType.IP, 3)
    sealed = [seal(key, TokenType.IP, t, f"10.9.0.{i}") for i, t in enumerate(tokens)]
    rows = {
        tokens[0]: StoredToken(tokens[0], "ip", 1, sealed[0]),
        tokens[1]: StoredToken(tokens[1], "ip", 1, sealed[2]),  # the database owner swapped it in
        tokens[2]: StoredToken(tokens[2], "ip", missing, sealed[2]),
    }
    got = reveal(
        _Keys({1: key}), "analyst", tokens, [TokenType.IP] * 3, {TokenType.IP: RevealLevel.PLAIN}, rows
    ).outcomes
    assert got[0] == Revealed(TokenType.IP, "10.9.0.0", RevealLevel.PLAIN)
    altered, unloaded = got[1], got[2]
    assert isinstance(altered, StoredValueAltered) and status_of(altered) == grpc.StatusCode.DATA_LOSS
    assert "altered in the database" in str(altered) and "security team" in str(altered)
    assert isinstance(unloaded, KeysUnavailable) and status_of(unloaded) == grpc.StatusCode.UNAVAILABLE


def test_a_purpose_spelling_a_masked_value_is_withheld_and_changes_nothing_the_caller_gets() -> None:
    # Review A, finding 1: were `INC-cb007107` (203.0.113.7 in hex) refused for a client that sees
    # ips masked, and `INC-cb007106` served, each call would test a guess of the value.
    key = DataKey(1, os.urandom(32))
    (token,) = new_tokens(TokenType.IP, 1)
    rows = {token: StoredToken(token, "ip", 1, seal(key, TokenType.IP, token, "203.0.113.7"))}

    def call(purpose: str, level: RevealLevel) -> RevealedCall:
        levels = {TokenType.IP: level}
        return reveal(_Keys({1: key}), "a", [token], [TokenType.IP], levels, rows, values_spelled_by(purpose))

    right, wrong = call("INC-cb007107", RevealLevel.MASKED), call("INC-cb007106", RevealLevel.MASKED)
    assert right == (wrong.outcomes, True, True, ()) and wrong.purpose_withheld is False
    with pytest.raises(PurposeHoldsOwnValue):  # shown in plain: the caller sees the value anyway
        call("INC-cb007107", RevealLevel.PLAIN)
