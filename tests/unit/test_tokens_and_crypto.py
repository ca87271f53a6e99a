"""Token text, normalization, fingerprints, sealing and masking."""

import hmac
import ipaddress
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault_service.domain.crypto import DataKey, SealBroken, fingerprint, open_sealed, seal
from vault_service.domain.errors import InvalidValue
from vault_service.domain.masking import mask
from vault_service.domain.token_types import TokenType, normalize
from vault_service.domain.tokens import new_tokens, type_of_token


def key(key_id: int = 1) -> DataKey:
    return DataKey(key_id, os.urandom(32))


def test_tokens_are_prefixed_random_and_self_describing() -> None:
    tokens = set(new_tokens(TokenType.IP, 1000))
    assert len(tokens) == 1000
    token = tokens.pop()
    assert token.startswith("ip_") and len(token) == 3 + 22
    assert type_of_token(token) is TokenType.IP
    assert type_of_token(new_tokens(TokenType.DEVICE_ID, 1)[0]) is TokenType.DEVICE_ID


@pytest.mark.parametrize("text", ["", "ip", "ip_short", "xx_AAAAAAAAAAAAAAAAAAAAAA", "ip_AAAAAAAAAAAAAAAAAAAAA!"])
def test_non_tokens_are_recognised(text: str) -> None:
    assert type_of_token(text) is None


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [(" 10.0.0.1 ", "10.0.0.1"), ("::ffff:10.0.0.1", "10.0.0.1"), ("2001:DB8:0:0::1", "2001:db8::1")],
)
def test_ip_values_are_normalized_so_spellings_share_a_token(raw: str, canonical: str) -> None:
    assert normalize(TokenType.IP, raw) == canonical


@pytest.mark.parametrize("bad", ["", "   ", "300.1.1.1", "1.2.3", "10.0.\x000.1", "x" * 300])
def test_invalid_ip_values_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(InvalidValue) as error:
        normalize(TokenType.IP, bad)
    assert bad.strip() == "" or bad.strip() not in str(error.value)


def test_device_id_with_control_characters_is_refused() -> None:
    with pytest.raises(InvalidValue):
        normalize(TokenType.DEVICE_ID, "593-47\x00-5928")


def test_fingerprint_is_keyed_deterministic_and_type_separated() -> None:
    k1, k2 = key(), key()
    assert fingerprint(k1, TokenType.IP, "1.2.3.4") == fingerprint(k1, TokenType.IP, "1.2.3.4")
    assert fingerprint(k1, TokenType.IP, "1.2.3.4") != fingerprint(k2, TokenType.IP, "1.2.3.4")
    assert fingerprint(k1, TokenType.IP, "1.2.3.4") != fingerprint(k1, TokenType.DEVICE_ID, "1.2.3.4")


def test_sealed_values_open_only_for_their_own_token() -> None:
    dek = key()
    token, other = new_tokens(TokenType.IP, 2)
    sealed = seal(dek, TokenType.IP, token, "199.172.111.135")
    assert open_sealed(dek, TokenType.IP, token, sealed) == "199.172.111.135"
    assert seal(dek, TokenType.IP, token, "199.172.111.135") != sealed  # fresh nonce each time
    with pytest.raises(SealBroken):
        open_sealed(dek, TokenType.IP, other, sealed)  # swapped between rows
    with pytest.raises(SealBroken):
        open_sealed(key(), TokenType.IP, token, sealed)  # wrong key
    with pytest.raises(SealBroken):
        open_sealed(dek, TokenType.IP, token, sealed[:-1] + bytes([sealed[-1] ^ 1]))  # tampered


def test_data_key_repr_hides_material() -> None:
    dek = key()
    assert dek.material.hex() not in repr(dek)


@pytest.mark.parametrize(
    ("token_type", "value", "masked"),
    [
        (TokenType.IP, "199.172.111.135", "***.***.***.135"),
        (TokenType.IP, "2001:db8::1", "****:**8::1"),
        (TokenType.DEVICE_ID, "593-47-5928", "***-**-5928"),
        # Short values show nothing: their last four would be half of them or more.
        (TokenType.DEVICE_ID, "ab12", "********"),
        (TokenType.DEVICE_ID, "abcde", "********"),
        (TokenType.DEVICE_ID, "abcdefg", "********"),
        (TokenType.DEVICE_ID, "abcdefgh", "****efgh"),
        (TokenType.IP, "1.2.3.4", "********"),
    ],
)
def test_masking(token_type: TokenType, value: str, masked: str) -> None:
    assert mask(token_type, value) == masked


@pytest.mark.parametrize(
    "value",
    ["x" * n for n in range(1, 40)]
    + ["593-47-5928-AB", "dev-\u00e9\u00e9\u00e9\u00e9xyz"]
    # Attack 56, A56-2: ids of symbols, CJK punctuation or combining marks were shown whole or nearly.
    + [
        "!#$%&()*+,/;<=>?@[]^`{|}~!#$%&()*+",
        "\u3001\u3002\u300c\u300d\u300e\u300f\u3010\u3011\u3014\u3015",
        "a\u0301\u0302\u0303b\u0304\u0305\u0306c\u0307\u0308\u0309\u030a\u030b\u030c",
    ],
)
def test_masking_never_shows_more_than_the_last_four_characters(value: str) -> None:
    masked = mask(TokenType.DEVICE_ID, value)
    assert len(masked) == len(value) or masked == "********"
    shown = [c for c, m in zip(value, masked, strict=False) if c == m and c not in "-.:_*"]  # "*": the mask's own
    assert len(shown) <= 4, masked
    if len(value) < 8:
        assert masked == "********"


@given(st.text(max_size=60))
def test_a_masked_value_shows_only_separators_before_its_last_four_characters(value: str) -> None:
    masked = mask(TokenType.DEVICE_ID, value)
    if len(value) < 8:
        assert masked == "********"
    else:
        assert set(masked[:-4]) <= set("*-.:_") and masked[-4:] == value[-4:]


@given(st.text(max_size=40) | st.ip_addresses().map(str) | st.from_regex(r"\A[0-9]{1,4}(\.[0-9]{1,4}){3}\Z"))
def test_ip_normalization_fast_path_agrees_with_the_ipaddress_module(raw: str) -> None:
    """The dotted-quad regex only short-cuts: every value normalizes as ipaddress would have it."""
    try:
        address = ipaddress.ip_address(raw.strip())
        expected: str | None = str(getattr(address, "ipv4_mapped", None) or address)
    except ValueError:
        expected = None
    try:
        got: str | None = normalize(TokenType.IP, raw)
    except InvalidValue:
        got = None
    assert got == expected


def test_every_token_type_is_found_by_its_prefix() -> None:
    for token_type in TokenType:
        assert TokenType.from_prefix(token_type.prefix) is token_type
    assert TokenType.from_prefix("nope") is None


@pytest.mark.parametrize("text", ["ip_" + "A" * 22 + "\n", " ip_" + "A" * 22, "ip_" + "A" * 21, "IP_" + "A" * 22])
def test_text_that_is_almost_a_token_is_not_one(text: str) -> None:
    assert type_of_token(text) is None


@given(material=st.binary(min_size=32, max_size=32), message=st.binary(max_size=600))
def test_the_precomputed_hmac_is_hmac_sha256(material: bytes, message: bytes) -> None:
    assert DataKey(1, material).hmac_sha256(message) == hmac.digest(material, message, "sha256")


def test_tokens_made_in_a_batch_are_tokens_of_their_type_and_all_different() -> None:
    tokens = new_tokens(TokenType.DEVICE_ID, 5000)
    assert len(set(tokens)) == 5000
    assert {type_of_token(t) for t in tokens} == {TokenType.DEVICE_ID}
    assert {len(t) for t in tokens} == {len("dev_") + 22}
    assert new_tokens(TokenType.IP, 0) == []
