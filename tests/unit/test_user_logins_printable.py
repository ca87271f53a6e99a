"""user_logins' CHECK (migration 0026) refuses only what the ETL refuses already.

The ETL loads user_logins with COPY: a row the table refused would fail the whole batch again on
every redelivery. So every code point the constraint's class names must be one the ETL sends to
the dead-letter queue first, in a field's value and in an event id.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest

from etl_service.domain.messages import check_event_id
from etl_service.domain.validation import Reason, Rejection, parse_login_event

MIGRATION = Path(__file__).resolve().parents[2] / "migrations" / "0026_user_logins_printable.sql"
_ESCAPE = r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8}))"
_ITEM = f"{_ESCAPE}(?:-{_ESCAPE})?"


def _code(digits: tuple[str | None, ...]) -> int:
    """The code point of one escape: the one of its hex groups that matched."""
    return int(next(d for d in digits if d), 16)


def refused_code_points() -> list[int]:
    """Every code point of the migration's bracket class, its ranges expanded (escapes only: anything else fails)."""
    found = re.search(r"refused constant text := '\[(.*?)\]';", MIGRATION.read_text())
    assert found, "the class is no longer where this test reads it"
    assert re.fullmatch(f"(?:{_ITEM})+", found.group(1)), "the class holds something other than escapes"
    points: list[int] = []
    for item in re.finditer(_ITEM, found.group(1)):
        low = _code(item.groups()[:3])
        high = _code(item.groups()[3:]) if any(item.groups()[3:]) else low
        points.extend(range(low, high + 1))
    return points


def test_the_class_is_every_control_and_format_character() -> None:
    points = set(refused_code_points())
    assert {0x1B, 0x09, 0x7F, 0x9B, 0x202E, 0x2067, 0x200B, 0xFEFF, 0xE0041, 0x180E, 0xFFF9} <= points
    assert not points & {0x20, 0xA0, 0xE9, 0x65E5}  # space, no-break space, e-acute, a CJK letter
    known = {c for c in range(1, 0x110000) if unicodedata.category(chr(c)) in ("Cc", "Cf")}
    assert known - points == set(), (
        f"Unicode {unicodedata.unidata_version} has control or format characters the CHECK does not refuse:"
        " add them in a new migration (the ETL refuses them already)"
    )


@pytest.mark.parametrize("point", refused_code_points(), ids=lambda p: f"U+{p:04X}")
def test_the_etl_refuses_every_character_the_table_refuses(point: int) -> None:
    body = {
        "user_id": f"user{chr(point)}1",
        "device_type": "ios",
        "ip": "10.0.0.1",
        "device_id": "d-1",
        "locale": "RU",
        "app_version": "2.3.0",
    }
    with pytest.raises(Rejection) as refused:
        parse_login_event(json.dumps(body))
    assert refused.value.reason == Reason.CONTROL_CHARACTER
    event_id, why_not = check_event_id(f"evt-{chr(point)}-1")
    assert event_id is None and why_not
