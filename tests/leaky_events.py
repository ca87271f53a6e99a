"""Malformed login events whose ip and device id a careless rejection message would echo.

The no-raw-PII checks (logs, the quarantine's `detail`, metrics) must search for the values of
rejected events too: a bad ip or an odd device id is exactly what a message such as "invalid
ip: ..." would repeat. Each value here is new on every call (random octets and hex), so a
match in a log or a metric can only be a leak of this run's events.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from devstack.events import OutgoingEvent

_GOOD = {"user_id": "leak-probe", "app_version": "2.3.0", "device_type": "ios", "locale": "RU"}


@dataclass(frozen=True)
class LeakyEvents:
    """The events to send, the reason each must be quarantined for, and the raw strings that must appear nowhere."""

    events: list[OutgoingEvent]
    reasons: dict[str, str]
    raw: set[str]


def _octet() -> int:
    return secrets.randbelow(254) + 1


def _hex() -> str:
    return secrets.token_hex(6)


def leaky_events() -> LeakyEvents:
    """One malformed event per form a rejection is likeliest to echo, with fresh values."""
    ip = f"100.{_octet()}.{_octet()}.{_octet()}"  # a well-formed ip, in events rejected for another field
    device = f"{_hex()}-{_hex()}"
    marker, second, third = _hex(), _hex(), _hex()
    number = int("7" + "".join(str(secrets.randbelow(10)) for _ in range(11)))
    cases: list[tuple[str, str, list[str]]] = [
        # (body, reason, raw strings it carries)
        (_json(ip=f"999.{_octet()}.{_octet()}.{_octet()}", device_id=device), "invalid_ip", []),
        (_json(ip=f"{ip}/24", device_id=device), "invalid_ip", []),
        (_json(ip=f"{ip}:8080", device_id=device), "invalid_ip", []),
        (_json(ip=f"fe80::{marker[:4]}:{marker[4:8]}%eth0", device_id=device), "invalid_ip", []),
        (_json(ip=f"ip-{marker}", device_id=device), "invalid_ip", []),
        (_json(ip=ip, device_id=f"{second}\u0000{third}"), "control_character", [second, third]),
        (_json(ip=ip, device_id=f"{second}\u200b{third}"), "control_character", [second, third]),
        (_json(ip=ip, device_id=f"{marker}-" + "9" * 300), "field_too_long", [marker]),
        (_json(ip=ip, device_id=number), "wrong_type", [str(number)]),
        (_json(ip=[ip], device_id=device), "wrong_type", []),
        (_json(ip=ip, device_id=device, device_type="toaster"), "unknown_device_type", []),
        (_json(ip=ip, device_id=device, app_version="v2-beta"), "invalid_app_version", []),
        (f"login from ip={ip} device_id={device}", "not_json", []),
        (f'{{"ip": "{ip}", "ip": "{ip}", "device_id": "{device}"}}', "duplicate_key", []),
    ]
    events = [OutgoingEvent(f"leak-{uuid.uuid4().hex}", body) for body, _, _ in cases]
    raw = {ip, device, marker} | {s for _, _, strings in cases for s in strings}
    raw |= raw_values(e.body for e in events)
    return LeakyEvents(events, {e.event_id: reason for e, (_, reason, _) in zip(events, cases, strict=True)}, raw)


def raw_values(bodies: Iterable[str]) -> set[str]:
    """Every ip and device id in `bodies` that parse as JSON objects, valid events or not (strings and numbers)."""
    found: set[str] = set()
    for body in bodies:
        try:
            document = json.loads(body)
        except ValueError:
            continue
        if not isinstance(document, dict):
            continue
        for field in ("ip", "device_id"):
            value = document.get(field)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str | int) and not isinstance(item, bool) and len(str(item)) >= 7:
                    found.add(str(item))
    return found


def leaked(raw: Iterable[str], *texts: str) -> list[str]:
    """The raw strings found in any of `texts` (each also as JSON would escape it)."""
    haystack = "\n".join(texts)
    return sorted(v for v in raw if v in haystack or json.dumps(v)[1:-1] in haystack)


def _json(**fields: object) -> str:
    return json.dumps({**_GOOD, **fields})
