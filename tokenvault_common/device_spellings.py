"""A device id as a reader takes it: the same id whatever separators, if any, join its groups.

`PIXEL-7A-GX7AS`, `pixel_7a_gx7as`, `PIXEL.7A.GX7AS` and `PIXEL7AGX7AS` name one device. Text that
must never carry a call's own values - the ETL's event ids, the vault's purposes - is compared
with a device id as written and in its compact form (`compact_form`), so that copying the id in
the form another tool writes it does not get it past the check.
"""

from __future__ import annotations

import re

_NOT_ALNUM = re.compile(r"[^0-9a-z]")


def compact_form(text: str) -> str:
    """`text` case-folded, without any character other than ASCII letters and digits (`PIXEL-7A` -> `pixel7a`)."""
    folded = text.casefold()
    if folded.isascii() and folded.isalnum():  # no separator to drop: the usual case costs no regex
        return folded
    return _NOT_ALNUM.sub("", folded)
