"""The ETL and the vault judge an ip or a device id alike (tokenvault_common.values).

A value the ETL accepts and the vault refuses would be quarantined as `vault_rejected_value`
instead of with its own reason; one the ETL refuses and the vault accepts would be lost data.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from etl_service.domain.validation import Rejection, parse_login_event
from tests.malformed_samples import body
from tokenvault_common.values import MAX_VALUE_LENGTH
from vault_service.domain.errors import InvalidValue
from vault_service.domain.token_types import TokenType, normalize


def etl_accepts(**fields: str) -> bool:
    try:
        parse_login_event(body(**fields))
    except Rejection:
        return False
    return True


def vault_accepts(token_type: TokenType, value: str) -> bool:
    try:
        normalize(token_type, value)
    except InvalidValue:
        return False
    return True


MAX = MAX_VALUE_LENGTH
BLANKS = st.text(st.sampled_from(" \u00a0\u3000\u2003"), max_size=12) | st.text(st.sampled_from(" \t\n"), max_size=3)
"""Padding: whitespace the judge strips (or, with tab and newline, refuses) around a value."""


def padded(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """`values` with blanks drawn before and after, so a padded value may cross the length limit."""
    return st.tuples(BLANKS, values, BLANKS).map("".join)


PRINTABLE = st.characters(categories=("L", "N", "P", "S", "Zs"))
# Lengths drawn around the limit too, where a judge that counts the padding disagrees with one that does not.
DEVICE_IDS = (
    st.text(min_size=1, max_size=40)
    | st.text(PRINTABLE, min_size=MAX - 12, max_size=MAX + 2)
    | st.builds(lambda n, ch: ch * n, st.integers(MAX - 12, MAX + 2), st.sampled_from("a-\u00e9"))
)


@given(padded(DEVICE_IDS))
@example(" " * 3 + "d" * MAX)  # the ETL once counted the padding and refused this; the vault accepts it
def test_etl_and_vault_agree_on_every_device_id(value: str) -> None:
    assert etl_accepts(device_id=value) == vault_accepts(TokenType.DEVICE_ID, value)


IPS = st.ip_addresses().map(str) | st.text(max_size=45) | st.from_regex(r"\A[0-9a-f:]{2,30}(%[a-z0-9]{1,5})?\Z")


@given(padded(IPS) | st.builds(lambda n, ip: " " * n + ip, st.integers(0, MAX), st.ip_addresses().map(str)))
@example(" " * 40 + "2001:db8::1")  # over the exercise's 45 characters only by its padding
def test_etl_and_vault_agree_on_every_ip(value: str) -> None:
    assert etl_accepts(ip=value) == vault_accepts(TokenType.IP, value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("device_id", "593\u300047-5928"),  # the vault refused these before, while the ETL accepted them
        ("device_id", "593\u00a047-5928"),
        ("ip", "fe80::1%eth0"),
        ("ip", "fe80::1%1"),
    ],
)
def test_values_both_refuse(field: str, value: str) -> None:
    token_type = TokenType.IP if field == "ip" else TokenType.DEVICE_ID
    assert not etl_accepts(**{field: value}) and not vault_accepts(token_type, value)


@pytest.mark.parametrize("value", ["\u3000593-47-5928\u00a0", " 593-47-5928 "])
def test_blanks_around_a_device_id_are_not_part_of_it(value: str) -> None:
    assert parse_login_event(body(device_id=value)).device_id == normalize(TokenType.DEVICE_ID, value) == "593-47-5928"
