"""What a purpose may hold: a case or ticket reference (`INC-4821`, `GDPR-2026-0042`), never PII.

The purpose is stored in the append-only audit log, where erasure cannot reach it; a value or
token written there would outlive its erasure. So a purpose that carries an IP address, a
token, an e-mail address, a hardware address, a device-id-like or other long number is refused,
saying why.
"""

from __future__ import annotations

import re

from tokenvault_common.pii_text import ISO_DATE_TIME, SEPARATOR, address_in, undefanged, visible
from vault_service.domain.errors import InvalidRequest
from vault_service.domain.token_types import TokenType

MAX_PURPOSE_LENGTH = 512

_PREFIXES = "|".join(t.prefix for t in TokenType)
_TOKEN = re.compile(
    r"(?i)(?<![a-z0-9])(?:" + _PREFIXES + r")(?:_[A-Za-z0-9_-]{3,}|[\s-]+[A-Za-z0-9_-]{16,})"
)  # a token, or the start of one (a token split by a space still names it), or its prefix joined otherwise
_TOKEN_BODY = re.compile(
    r"(?<![A-Za-z0-9_-])(?=[A-Za-z0-9_-]*[a-z])(?=[A-Za-z0-9_-]*[A-Z])(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{20,}"
)
"""A token's random part without its prefix: 20 or more URL-safe base64 characters mixing lower
case, upper case and digits (a reference like GDPR-2026-0042 is one case and short)."""
_ID_NUMBER = re.compile(r"(?<!\d)\d{3}(?:" + SEPARATOR + r")?\d{2}(?:" + SEPARATOR + r")?\d{4}(?!\d)|\d{8,}")


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
    if not visible(purpose).isascii():
        raise InvalidRequest(
            "purpose must be plain ASCII text, a case or ticket reference such as INC-4821: other characters"
            " can make an address or a token look like something else"
        )


def pii_in(purpose: str) -> str | None:
    """What kind of personal data `purpose` seems to carry, or None.

    Checked on the NFKC form (fullwidth digits and dots read as ASCII) and deliberately broad:
    a reference like INC-4821 passes; anything shaped like an address (tokenvault_common.pii_text,
    read broadly), a token or an identifier number, however it is spelled, does not.
    """
    text = undefanged(purpose)
    if _TOKEN.search(text) or _TOKEN_BODY.search(text):
        return "it holds a token"
    address = address_in(text, broad=True)
    if address:
        return address
    if _ID_NUMBER.search(ISO_DATE_TIME.sub(" ", text)):
        return "it holds an identifier-like number (8 or more digits, or ddd-dd-dddd)"
    return None
