"""A purpose carrying personal data, however it is spelled, is refused and not stored.

docs/threat-model.md and vault_service/domain/purpose.py: "a purpose carrying an IP, a token, an
e-mail, a MAC or an identifier-like number is refused and not stored" - the audit log is
append-only, so what it stores outlives any erasure. Each table row is a purpose and why it must
be refused: plainly written personal data (first round), and spellings that show (or read aloud)
as an address, an id number or a token but got past an earlier filter and were stored by the real
vault (second and third insider rounds, 3 Dec).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import psycopg
import pytest

from tests.integration.fresh_values import fresh_value
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

StubFor = Callable[..., vault_pb2_grpc.TokenVaultStub]

_INVISIBLE = "\ufe0f"  # VARIATION SELECTOR-16: printable, renders as nothing after a digit

_CIRCLED = "\u24ff\u2776\u2777\u2778\u2779\u277a\u277b\u277c\u277d\u277e"
"""Negative circled digits 0-9 (dingbats): numbers to any reader, but not decimal digits (\\d) and
left as they are by NFKC, so the filter reads no number in them."""


def _circled(text: str) -> str:
    return "".join(_CIRCLED[int(c)] if c.isdigit() else c for c in text)


_PLAINLY = [
    ("re 203.0.113.7", "an IPv4 address"),
    ("re 2001:db8::7 case", "an IPv6 address"),
    ("device 567-82-1945", "an id number"),
    ("see ip_" + "A" * 22, "a token"),
    ("mail jo@example.com", "an e-mail address"),
]
"""Personal data as anyone writes it: the refusal says why."""

_AROUND_THE_FILTER = [
    # IPv4 addresses and id numbers, other separators (first round)
    ("re 203:0:113:7", "IPv4 with colons"),
    ("re 203|0|113|7", "IPv4 with bars"),
    ("ip 203;0;113;7", "IPv4 with semicolons"),
    ("re 203+0+113+7", "IPv4 with plus signs"),
    ("re 203\u00b70\u00b7113\u00b77", "IPv4 with middle dots"),
    ("re 203\u30020\u3002113\u30027", "IPv4 with ideographic full stops (NFKC keeps them)"),
    ("ip=203\\0\\113\\7", "IPv4 with backslashes"),
    ("device 593:47:5928", "id number with colons"),
    ("device 593|47|5928", "id number with bars"),
    # IPv4 addresses and id numbers around the 3 Dec fix (second round)
    ("re 203.0.1" + _INVISIBLE * 4 + "13.7", "IPv4 with invisible variation selectors: displays as the address"),
    ("re 593-4" + _INVISIBLE + "7-5928", "id number with an invisible variation selector: displays as the number"),
    ("re 203.0.1" + "\u034f" * 4 + "13.7", "IPv4 with combining grapheme joiners, invisible too"),
    ("re 203....0....113....7", "IPv4 with four separators instead of up to three"),
    ("re 593----47----5928", "id number with four separators"),
    ("re 203 dot 0 dot 113 dot 7", "IPv4 with words as separators"),
    ("re 203o0o113o7", "IPv4 with letters as separators"),
    ("re 0xcb.0x0.0x71.0x7", "IPv4 in dotted hex, which inet_aton and browsers read as the address"),
    # inet_aton forms with hex or octal parts, or glued to letters (attack 10, finding 2)
    ("INC-203.0.0x7307", "IPv4 short form with a hex last part (203.0.115.7 to inet_aton)"),
    ("INC-0313.0.29447", "IPv4 short form with an octal first part"),
    ("INC-evt203.0.29447", "IPv4 short form glued to letters"),
    ("re " + _circled("203.0.113.7"), "IPv4 in negative circled digits"),
    ("re " + _circled("593-47-5928"), "id number in negative circled digits"),
    # IPv6 addresses, which the filter read with colons or dashes only (third round)
    ("re 2001\u2236db8\u2236\u22361", "IPv6 with RATIO signs: displays exactly as 2001:db8::1"),
    ("re 2001|db8||1", "IPv6 with bars, as round one found for IPv4"),
    ("re 2001 : db8 : : 1", "IPv6 with blanks around the colons"),
    ("re 2001.db8.a.b.c.d.e.f", "IPv6 in dotted groups (2001:db8:a:b:c:d:e:f)"),
    ("re 2001_db8__1", "IPv6 with underscores"),
    ("re 2001/db8//1", "IPv6 with slashes"),
    ("re 2001 db8 abcd ef01 dead beef cafe face", "IPv6 in eight blank-separated groups"),
    # e-mail and hardware addresses (third round)
    ("re alice@example\u3002com", "e-mail with an ideographic full stop, as round one found for addresses"),
    ("re alice@example[.]com", "e-mail in the usual defanged spelling"),
    ("re alice[at]example[dot]com", "e-mail with [at] and [dot]"),
    ("re ab|cd|ef|ab|cd|ef", "hardware address with bars (ab:cd:ef:ab:cd:ef)"),
    ("re AB_CD_EF_AB_CD_EF", "hardware address with underscores"),
]
"""Spellings that read as an address or an id number to anyone, and were stored as given."""

_TOKEN_SPELLINGS = [
    ("ip-{body}", "a dash for the underscore"),
    ("ip {body}", "a blank for the underscore"),
    ("{body}", "the token's 22 characters without the prefix (two prefixes only: it names the token)"),
    ("\u0456p_{body}", "a Cyrillic i for the Latin one: displays as the token"),
    ("ip_{head} {tail}", "split by a blank after three characters: a token split by a space still names it"),
]
"""Spellings of the very token being revealed (third round): filled in with a real token."""


def _refused_and_not_stored(stub_for: StubFor, env: dict[str, str], token: str, purpose: str) -> str:
    """Reveal `token` with `purpose`; assert INVALID_ARGUMENT and no audit row with it; the refusal's text."""
    with pytest.raises(grpc.RpcError) as refused:
        stub_for("analyst").Detokenize(vault_pb2.DetokenizeRequest(tokens=[token], purpose=purpose), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        stored = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose = %s", (purpose,)).fetchone()
    assert stored == (0,)
    return refused.value.details() or ""


@pytest.mark.parametrize("purpose", [pytest.param(p, id=why) for p, why in _PLAINLY])
def test_a_purpose_carrying_personal_data_is_refused_and_not_stored(
    stack_env: dict[str, str], stub_for: StubFor, purpose: str
) -> None:
    assert "personal data" in _refused_and_not_stored(stub_for, stack_env, "ip_" + "P" * 22, purpose)


@pytest.mark.parametrize("purpose", [pytest.param(p, id=why) for p, why in _AROUND_THE_FILTER])
def test_a_purpose_spelling_personal_data_around_the_filter_is_refused_and_not_stored(
    stack_env: dict[str, str], stub_for: StubFor, purpose: str
) -> None:
    _refused_and_not_stored(stub_for, stack_env, "ip_" + "Q" * 22, purpose)


@pytest.mark.parametrize("spelled", [pytest.param(s, id=why) for s, why in _TOKEN_SPELLINGS])
def test_a_purpose_spelling_a_token_around_the_filter_is_refused_and_not_stored(
    stack_env: dict[str, str], stub_for: StubFor, spelled: str
) -> None:
    token = _token_without_other_patterns(stub_for)
    body = token.removeprefix("ip_")
    purpose = "re " + spelled.format(body=body, head=body[:3], tail=body[3:])
    _refused_and_not_stored(stub_for, stack_env, token, purpose)


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


@pytest.mark.parametrize("separator", list(".:/#"))
def test_a_purpose_holding_the_calls_token_split_by_a_separator_is_refused_and_not_stored(
    stack_env: dict[str, str], stub_for: StubFor, separator: str
) -> None:
    # Attack 14, finding 7: each piece is shorter than a token's random part, so the shape check
    # passed them, and the analyst's reveal of that very token kept the purpose.
    token = next(t for t in iter(lambda: _token_without_other_patterns(stub_for), "") if "_" not in t[3:])
    body = token.removeprefix("ip_")  # no "-" or "_": the pieces are groups of a reference
    purpose = "INC-" + separator.join([body[:8], body[8:16], body[16:]])
    assert "personal data" in _refused_and_not_stored(stub_for, stack_env, token, purpose)
    with pytest.raises(grpc.RpcError) as refused:
        erase = vault_pb2.EraseRequest(tokens=[token], purpose=purpose)
        stub_for("privacy-officer").Erase(erase, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _rows_holding_piece(stack_env, body[8:16]) == 0


def _rows_holding_piece(env: dict[str, str], piece: str) -> int:
    """How many audit rows hold `piece` of a token in their purpose."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose LIKE %s", (f"%{piece}%",)).fetchone()
    assert row is not None
    return int(row[0])
