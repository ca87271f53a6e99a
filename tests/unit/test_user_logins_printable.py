"""user_logins' CHECK (migration 0026) refuses only what the ETL refuses already.

The ETL loads user_logins with COPY: a row the table refused would fail the whole batch again on
every redelivery. So every code point the constraint's class names must be one the ETL sends to
the dead-letter queue first, in a field's value and in an event id.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from etl_service.domain.messages import check_event_id
from etl_service.domain.validation import Reason, Rejection, parse_login_event

MIGRATION = Path(__file__).resolve().parents[2] / "migrations" / "0026_user_logins_printable.sql"
_ESCAPE = r"\\[xu]([0-9a-f]{2}(?:[0-9a-f]{2})?)"


def refused_code_points() -> list[int]:
    """Every code point of the migration's bracket class, its ranges expanded."""
    found = re.search(r"refused constant text := '\[(.*?)\]';", MIGRATION.read_text())
    assert found, "the class is no longer where this test reads it"
    points: list[int] = []
    for first, last in re.findall(f"{_ESCAPE}(?:-{_ESCAPE})?", found.group(1).lower()):
        low = int(first, 16)
        points.extend(range(low, (int(last, 16) if last else low) + 1))
    return points


def test_the_class_holds_the_controls_and_spoofing_characters() -> None:
    points = set(refused_code_points())
    assert {0x1B, 0x09, 0x7F, 0x9B, 0x202E, 0x2067, 0x200B, 0xFEFF} <= points  # ESC, TAB, DEL, CSI, RLO, ...
    assert not points & {0x20, 0xA0, 0xE9, 0x65E5}  # space, no-break space, e-acute, a CJK letter


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
