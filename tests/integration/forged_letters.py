"""Forged dead letters and the people in them, for the tests of what a producer can put in the DLQ."""

from __future__ import annotations

import base64
import json
import random
import re
from typing import Any

from etl_service.service.sealing import dead_letter_body
from tests.malformed_samples import GOOD


def person(tag: str) -> dict[str, str]:
    """Synthetic values of one person (a TEST-NET ip), unique by `tag`."""
    return {"user_id": f"moved-{tag}", "ip": f"203.0.113.{random.randrange(170, 180)}", "device_id": f"mv-dev-{tag}"}


def forged_in_clear(values: dict[str, str]) -> str:
    """Attack 10, finding 3: an exact envelope of the ETL's whose 'ciphertext' is base64 of a person's values."""
    clear = json.dumps({**GOOD, **values}).encode()
    return dead_letter_body("vault:v1:" + base64.b64encode(clear).decode(), None, "tokenvault-dead-letters")


def clear_in(letters: list[dict[str, Any]], values: dict[str, str]) -> list[str]:
    """The kinds of `values` readable in the letters' bodies, as they are or under any `vault:vN:` base64 payload."""
    readable = ""
    for letter in letters:
        readable += letter["Body"]
        for payload in re.findall(r"vault:v\d+:([A-Za-z0-9+/=]+)", letter["Body"]):
            readable += base64.b64decode(payload).decode("latin-1")
    return [kind for kind, value in values.items() if value in readable]
