"""The batch forms of the tokenize path's steps agree with the one-value forms they replace."""

import base64
import hmac
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenvault_common.ipv4 import all_canonical_ipv4, is_canonical_ipv4
from vault_service.domain.crypto import (
    NONCE_BYTES,
    DataKey,
    SealBroken,
    fingerprint,
    fingerprints,
    open_sealed,
    seal_many,
)
from vault_service.domain.errors import InvalidValue
from vault_service.domain.token_types import TokenType, normalize, normalize_many
from vault_service.domain.tokens import new_tokens, tokens_of, type_of_token

VALUES = st.lists(st.text(max_size=30), max_size=30)
IPV4 = st.ip_addresses(v=4).map(str)
# Canonical IPv4 mostly, with near misses: leading zeros, blanks, newlines inside, other text.
IPISH = IPV4 | st.from_regex(r"\A[0-9]{1,4}(\.[0-9]{1,4}){3}\Z") | st.sampled_from(["", " 1.2.3.4", "1.2.3.4\n5.6.7.8"])


def key() -> DataKey:
    return DataKey(7, os.urandom(32))


@given(VALUES, st.sampled_from(TokenType))
def test_fingerprints_are_the_fingerprint_of_each_value(values: list[str], token_type: TokenType) -> None:
    k = key()
    assert fingerprints(k, token_type, values) == [fingerprint(k, token_type, v) for v in values]


def test_fingerprints_are_hmac_sha256_of_type_and_value() -> None:
    k = key()
    (one,) = fingerprints(k, TokenType.IP, ["10.0.0.1"])
    assert one == hmac.digest(k.material, b"ip\x0010.0.0.1", "sha256")


@given(VALUES.filter(lambda v: all(c < "\ud800" or c > "\udfff" for c in "".join(v))))
def test_each_sealed_value_opens_for_its_own_token_only(values: list[str]) -> None:
    k = key()
    tokens = new_tokens(TokenType.DEVICE_ID, len(values))
    sealed = seal_many(k, TokenType.DEVICE_ID, tokens, values)
    assert [open_sealed(k, TokenType.DEVICE_ID, t, s) for t, s in zip(tokens, sealed, strict=True)] == values
    if len(values) > 1:
        with pytest.raises(SealBroken):  # the binding to the token holds in a batch too
            open_sealed(k, TokenType.DEVICE_ID, tokens[1], sealed[0])
        with pytest.raises(SealBroken):
            open_sealed(k, TokenType.IP, tokens[0], sealed[0])


def test_every_sealed_value_has_a_nonce_of_its_own() -> None:
    k = key()
    count = 5000
    sealed = seal_many(k, TokenType.IP, new_tokens(TokenType.IP, count), ["10.0.0.1"] * count)
    nonces = {s[:NONCE_BYTES] for s in sealed}
    assert len(nonces) == count
    assert len({s[NONCE_BYTES:] for s in sealed}) == count  # same value, different ciphertexts


def test_sealing_needs_a_token_per_value() -> None:
    with pytest.raises(ValueError):  # zip(strict=True): never a value sealed under another token
        seal_many(key(), TokenType.IP, ["ip_" + "A" * 22], ["10.0.0.1", "10.0.0.2"])


@given(st.binary(min_size=0, max_size=18 * 40).map(lambda b: b[: len(b) - len(b) % 18]), st.sampled_from(TokenType))
def test_tokens_of_a_pool_are_the_urlsafe_base64_of_each_tokens_16_bytes(pool: bytes, token_type: TokenType) -> None:
    expected = [
        f"{token_type.prefix}_" + base64.urlsafe_b64encode(pool[s : s + 16]).rstrip(b"=").decode()
        for s in range(0, len(pool), 18)
    ]
    assert tokens_of(token_type, pool) == expected
    assert all(type_of_token(t) is token_type for t in expected)


def test_a_pool_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="18 bytes a token"):
        tokens_of(TokenType.IP, bytes(16))


def test_new_tokens_carry_all_128_bits() -> None:
    # Every one of the 22 characters varies, and the last takes the 4 values its 2 bits allow.
    tokens = new_tokens(TokenType.IP, 4000)
    columns = [{t[3 + i] for t in tokens} for i in range(22)]
    assert all(len(c) > 32 for c in columns[:21])
    assert columns[21] == set("AQgw")


@given(st.lists(IPISH, max_size=20))
def test_a_batch_is_canonical_ipv4_when_each_of_its_values_is(values: list[str]) -> None:
    assert all_canonical_ipv4(values) == all(is_canonical_ipv4(v) for v in values)


def test_a_value_holding_a_newline_does_not_pass_as_two() -> None:
    assert not all_canonical_ipv4(["1.2.3.4\n5.6.7.8", "9.9.9.9"])
    assert not all_canonical_ipv4(["1.2.3.4\n"])
    assert all_canonical_ipv4([]) and all_canonical_ipv4(["0.0.0.1", "255.255.255.255"])


def test_the_octet_pattern_matches_0_to_255_without_leading_zeros() -> None:
    # The module's own pattern, in every position of an address: each string of up to four
    # digits passes exactly when it is a number 0-255 written without leading zeros.
    digit_strings = [f"{n:0{width}d}" for width in range(1, 5) for n in range(10**width)]
    canonical = {str(n) for n in range(256)}
    for position in range(4):

        def address(octet: str, position: int = position) -> str:
            return ".".join(octet if i == position else "1" for i in range(4))

        assert {s for s in digit_strings if is_canonical_ipv4(address(s))} == canonical
        assert all_canonical_ipv4([address(s) for s in sorted(canonical)])


@given(st.lists(IPISH | st.ip_addresses(v=6).map(str) | st.text(max_size=12), max_size=12), st.sampled_from(TokenType))
def test_normalize_many_judges_each_value_as_normalize_does(values: list[str], token_type: TokenType) -> None:
    judged, all_valid = normalize_many(token_type, values)
    expected: list[str | type[InvalidValue]] = []
    for value in values:
        try:
            expected.append(normalize(token_type, value))
        except InvalidValue:
            expected.append(InvalidValue)
    assert [j if isinstance(j, str) else type(j) for j in judged] == expected
    assert all_valid == (InvalidValue not in expected)
