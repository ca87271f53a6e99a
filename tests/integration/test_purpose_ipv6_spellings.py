"""Purposes that carry an IPv6 address in other spellings (third insider round, 3 Dec).

docs/threat-model.md and vault_service/domain/purpose.py: a purpose carrying an IP address "however
it is spelled" is refused and not stored - the audit log is append-only, so what it stores
outlives any erasure. The filter reads IPv4 in any separator, but IPv6 only with colons or
dashes: each purpose below shows (or reads aloud) as the documentation address 2001:db8::1 (or
another IPv6 address) and is stored by the real vault.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import psycopg
import pytest

from tests.integration.test_vault_security import fresh_value
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

StubFor = Callable[..., vault_pb2_grpc.TokenVaultStub]


@pytest.mark.parametrize(
    "purpose",
    [
        "re 2001\u2236db8\u2236\u22361",  # RATIO (U+2236): displays exactly as 2001:db8::1
        "re 2001|db8||1",  # the bar spelling round one found for IPv4
        "re 2001 : db8 : : 1",  # colons with blanks
        "re 2001.db8.a.b.c.d.e.f",  # dotted groups (2001:db8:a:b:c:d:e:f)
        "re 2001_db8__1",
        "re 2001/db8//1",
        "re 2001 db8 abcd ef01 dead beef cafe face",  # eight groups, blank-separated
    ],
)
def test_a_purpose_spelling_an_ipv6_address_around_the_filter_is_refused_and_not_stored(
    stack_env: dict[str, str], stub_for: StubFor, purpose: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        stub_for("analyst").Detokenize(
            vault_pb2.DetokenizeRequest(tokens=["ip_" + "Q" * 22], purpose=purpose), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        stored = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose = %s", (purpose,)).fetchone()
    assert stored == (0,)


_CIRCLED = "\u24ff\u2776\u2777\u2778\u2779\u277a\u277b\u277c\u277d\u277e"
"""Negative circled digits 0-9 (dingbats): numbers to any reader, but not decimal digits (\\d) and
left as they are by NFKC, so the filter reads no number in them."""


def _circled(text: str) -> str:
    return "".join(_CIRCLED[int(c)] if c.isdigit() else c for c in text)


@pytest.mark.parametrize("shown", ["203.0.113.7", "593-47-5928"])
def test_a_purpose_spelling_an_address_or_id_in_circled_digits_is_refused_and_not_stored(
    stack_env: dict[str, str], stub_for: StubFor, shown: str
) -> None:
    purpose = "re " + _circled(shown)
    with pytest.raises(grpc.RpcError) as refused:
        stub_for("analyst").Detokenize(
            vault_pb2.DetokenizeRequest(tokens=["ip_" + "Q" * 22], purpose=purpose), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        stored = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose = %s", (purpose,)).fetchone()
    assert stored == (0,)


@pytest.mark.parametrize(
    "purpose",
    [
        "re alice@example\u3002com",  # IDEOGRAPHIC FULL STOP, the spelling round one found for addresses
        "re alice@example[.]com",  # the usual defanged spelling
        "re alice[at]example[dot]com",
        "re ab|cd|ef|ab|cd|ef",  # a hardware address with bars (ab:cd:ef:ab:cd:ef)
        "re AB_CD_EF_AB_CD_EF",
    ],
)
def test_a_purpose_spelling_an_email_or_hardware_address_around_the_filter_is_refused_and_not_stored(
    stack_env: dict[str, str], stub_for: StubFor, purpose: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        stub_for("analyst").Detokenize(
            vault_pb2.DetokenizeRequest(tokens=["ip_" + "Q" * 22], purpose=purpose), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        stored = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose = %s", (purpose,)).fetchone()
    assert stored == (0,)


@pytest.mark.parametrize(
    "spelled",
    [
        "ip-{body}",  # a dash for the underscore
        "ip {body}",
        "{body}",  # the token's 22 characters without the prefix (two prefixes only: it names the token)
        "\u0456p_{body}",  # CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I: displays as the token
        "ip_{head} {tail}",  # split by a space after three characters ("a token split by a space still names it")
    ],
)
def test_a_purpose_spelling_a_token_around_the_filter_is_refused_and_not_stored(
    stack_env: dict[str, str], stub_for: StubFor, spelled: str
) -> None:
    token = _token_without_other_patterns(stub_for)
    body = token.removeprefix("ip_")
    purpose = "re " + spelled.format(body=body, head=body[:3], tail=body[3:])
    with pytest.raises(grpc.RpcError) as refused:
        stub_for("analyst").Detokenize(vault_pb2.DetokenizeRequest(tokens=[token], purpose=purpose), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        stored = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose = %s", (purpose,)).fetchone()
    assert stored == (0,)


def _token_without_other_patterns(stub_for: StubFor) -> str:
    """A token whose body has no dash and at most three digits: no address or number pattern can match it.

    Token bodies are random; one with four digit groups would be refused as an address, not as a token.
    """
    for _ in range(200):
        item = vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=fresh_value(vault_pb2.TOKEN_TYPE_IP))
        request = vault_pb2.TokenizeRequest(items=[item])
        (result,) = stub_for("etl-service").Tokenize(request, timeout=10).results
        body = result.token.removeprefix("ip_")
        if "-" not in body and sum(c.isdigit() for c in body) <= 3:
            return str(result.token)
    raise AssertionError("no token without a dash and with at most three digits in 200 tries")
