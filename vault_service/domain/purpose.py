"""What a purpose may hold: a case or ticket reference (`INC-4821`, `GDPR-2026-0042`), never PII.

The purpose is stored in the append-only audit log, where erasure cannot reach it; a value or
token written there would outlive its erasure. So a purpose that carries an IP address, a
token, an e-mail address, a device-id-like or other long number is refused, saying why.
"""

from __future__ import annotations

import ipaddress
import re

from vault_service.domain.errors import InvalidRequest
from vault_service.domain.token_types import TokenType

MAX_PURPOSE_LENGTH = 512

_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])(?:" + "|".join(t.prefix for t in TokenType) + r")_[A-Za-z0-9_-]{22}(?![A-Za-z0-9_-])"
)
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_IPV6_CANDIDATE = re.compile(r"[0-9A-Fa-f:.%]*:[0-9A-Fa-f:.%]*:[0-9A-Fa-f:.%]*")
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[A-Za-z]{2,}")
_ID_NUMBER = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)|\d{9,}")
_MAC = re.compile(r"(?i)(?<![0-9a-f])[0-9a-f]{2}(?:[:-][0-9a-f]{2}){5}(?![0-9a-f])")


def check_purpose(purpose: str) -> None:
    """Raise InvalidRequest with the reason unless `purpose` is a short printable reference without PII."""
    if not purpose.strip():
        raise InvalidRequest("purpose is required: say why (ticket, case or request id)")
    if not purpose.isprintable():
        raise InvalidRequest("purpose must be printable text: no control characters or line breaks")
    if len(purpose) > MAX_PURPOSE_LENGTH:
        raise InvalidRequest(f"purpose is longer than {MAX_PURPOSE_LENGTH} characters")
    reason = pii_in(purpose)
    if reason:
        raise InvalidRequest(
            f"purpose must not contain personal data ({reason}); give a case or ticket reference such as INC-4821"
        )


def pii_in(text: str) -> str | None:
    """What kind of personal data `text` seems to carry, or None."""
    if _TOKEN.search(text):
        return "it holds a token"
    if any(_is_ip(m) for m in _IPV4.findall(text)) or any(_is_ip(m) for m in _IPV6_CANDIDATE.findall(text)):
        return "it holds an IP address"
    if _EMAIL.search(text):
        return "it holds an e-mail address"
    if _MAC.search(text):
        return "it holds a hardware address"
    if _ID_NUMBER.search(text):
        return "it holds an identifier-like number (9 or more digits, or ddd-dd-dddd)"
    return None


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate.split("%", 1)[0])  # a zone id (fe80::1%eth0) is still an address
    except ValueError:
        return False
    return True
