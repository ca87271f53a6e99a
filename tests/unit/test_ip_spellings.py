"""tokenvault_common.ip_spellings.ips_spelled_by on pieces longer than any address (attack 12, finding 3).

Its callers (the vault's purpose check, the ETL's own-value check, `dead-letters erase`) pass it
pieces of text a client or a producer wrote: a redriven original's event id can be ~256 kB, and
`int` refuses a run of more than 4,300 digits (ValueError). Synthetic TEST-NET values only.
"""

from __future__ import annotations

import random
import socket

import pytest

from tokenvault_common import ip_spellings
from tokenvault_common.ip_spellings import MAX_SPELLING_LENGTH, ips_spelled_by


@pytest.mark.parametrize(
    "piece",
    ["9" * 5000, "9" * 250_000, "1" * (MAX_SPELLING_LENGTH + 1), "f" * 5000, "1." * 3000, "1:" * 3000, "0x" + "f" * 99],
)
def test_a_piece_longer_than_any_spelling_of_an_address_spells_none(piece: str) -> None:
    assert ips_spelled_by(piece) == frozenset()


@pytest.mark.parametrize(
    ("piece", "ip"),
    [
        ("0" * 5000 + "3405803783", "203.0.113.7"),  # the decimal number, zero-padded past int's digit limit
        ("0x" + "0" * 5000 + "cb007107", "203.0.113.7"),
        ("0" * 60 + "42540766411282592856903984951653826561", "2001:db8::1"),  # 39 digits, the most
        ("0000:0000:0000:0000:0000:ffff:203.0.113.7", "203.0.113.7"),
        ("0x00000000000000000000000000000000000000000cb.0.113.7", "203.0.113.7"),
        ("203.0.113." + "0" * 60 + "7", "203.0.113.7"),  # inet_aton reads any leading zeros (octal 07)
    ],
)
def test_leading_zeros_do_not_count_against_the_length(piece: str, ip: str) -> None:
    assert ip in ips_spelled_by(piece)


def test_the_longest_spelling_of_an_address_is_read() -> None:
    longest = "0000:0000:0000:0000:0000:ffff:203.113.100.254"
    assert len(longest) == MAX_SPELLING_LENGTH
    assert ips_spelled_by(longest) == {"203.113.100.254"}


@pytest.mark.parametrize("piece", ["1" * 250_000, "0x" + "f" * 250_000, "1." * 125_000, "1:" * 125_000])
def test_an_over_long_piece_is_never_parsed(piece: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused by its length before any reading: no int(), inet_aton or ipaddress parse of it at all."""

    def parsed(*_: object) -> None:
        raise AssertionError("an over-long piece was parsed")

    for reader in ("normalize_ip", "_number_readings", "_inet_aton"):
        monkeypatch.setattr(ip_spellings, reader, parsed)
    assert ips_spelled_by(piece) == frozenset()


def test_canonical_ipv4_forms_are_those_ipaddress_gives() -> None:
    """The fast path of `ip_forms` (no `ipaddress` objects) gives what the general path gives."""
    rng = random.Random(7)
    edges = [f"{a}.{b}.{c}.{d}" for a in (0, 1, 15, 16, 255) for b in (0, 9, 16, 255) for c in (0, 7) for d in (0, 16)]
    for address in edges + [socket.inet_ntoa(rng.getrandbits(32).to_bytes(4, "big")) for _ in range(20_000)]:
        assert ip_spellings._canonical_ipv4_forms(address) == ip_spellings._forms_read_by_ipaddress(address), address
