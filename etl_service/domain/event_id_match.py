"""Whether a dead letter's event id names a person: the event-id half of `dead-letters erase`'s matching.

A dead letter's event id (the `event_id` attribute a producer set, kept by the ETL or carried
as sent by SQS's redrive) is matched besides its body (erasure_match.Person.matches_event_id): a
letter with no kept body (too large, ETL_DLQ_BODIES=discard) still names the person there when
the producer built its event id from their values. No other attribute is: `reason`,
`reason_detail`, `source_message_id` and `source_sent_timestamp` are written by the ETL from a
closed set of reasons, parser messages, SQS's message id and a time, never from a body's values
(etl_service/adapters/sqs.py), and reading them deleted other people's letters (user id `0` is
in every not_json letter's "at position 0"). In the event id, read NFKC and case-folded as
groups of ASCII letters and digits split by anything else:
- a user id (stripped; in the event id as written, case and all): the whole event id, or a
  whole run of groups when it is at least MIN_USER_ID_IN_GROUPS characters and not digits only
  (`login-alice42-17` holds `alice42`).
  A shorter or all-digit user id matches only the whole event id: `0`, `17`, `2026` or `000042`
  are any event id's counters and dates, and a deletion cannot be undone;
- a device id: its compact form (tokenvault_common.device_spellings, as the vault's purpose
  check reads it) equal to a whole run of groups joined (`evt-PIXEL7AGX7AS-1`, `pixel_7a_gx7as`,
  fullwidth letters) when it is at least MIN_DEVICE_ID_IN_GROUPS characters, else to the
  compact form of the whole event id;
- an ip: what tokenvault_common.ip_spellings reads as the person's canonical ip, in a whole
  group (`cb007107`, `3405803783`), a run of groups joined by `.` or `:` (`203.0.28935`,
  `0xcb.0.113.7`, `203.000.113.007`, IPv6), a dotted number (pii_text.dotted_numbers), or four
  decimal groups 0-255 joined by any other separator (`203_0_113_7`, `203-0-113-7`); read also
  percent-decoded (`203%2E0%2E113%2E7`). `203.0.113.77` is not `203.0.113.7`.
  A short form - a bare whole number (one group, no `0x`: `3405803783`, `cb007107`, or a
  39-digit IPv6), or 2-3 dotted numbers without a `0x` part (`203.0.28935`, `2.5` is 2.0.0.5
  to `inet_aton`) - is read as an address only on a letter whose body could not be read
  (`body_read` False: no kept body, or one that could not be opened), where the event id is
  all there is. On a letter whose body was read, the body decides, and the event id names an
  ip only in a full spelling (`full_ip_spelling`): four parts (`203.0.113.7`, `203-0-113-7`,
  `0313.0.0161.07`), IPv6, or with a `0x` part (`0xcb007107`, `203.0.0x7307`: a reader's
  address, never a counter, version or price). Every group of 8 to 39 digits is some address as
  a number, and every version, decimal or price some short form, so an event id's dates,
  epoch seconds, order numbers (`evt-20261203-000042` is 1.53.41.83 in decimal, 32.38.18.3 in
  hex) and versions (`build-2.5`, `app-3.12.1`, `price-12.99`) would delete other people's
  letters, irreversibly, by coincidence (attack 12, finding 4; attack 14, finding 8); and the
  ETL refuses an event id holding its own event's ip in those forms once it has parsed the
  event (etl_service/domain/own_values.py), so on such a letter the reading is only ever a
  coincidence (on one it could not parse, the ip is normally in the body it kept).

The functions here take the person's values one by one (erasure_match.Person reads the criteria
and matches bodies); none raises on what an event id holds.
"""

from __future__ import annotations

import re

from tokenvault_common.device_spellings import compact_form
from tokenvault_common.ip_spellings import ips_spelled_by
from tokenvault_common.pii_text import dotted_numbers

MIN_USER_ID_IN_GROUPS = 6
"""A user id shorter than this (or of digits only) matches an event id only as the whole of it."""
MIN_DEVICE_ID_IN_GROUPS = 6
"""A device id whose compact form is shorter than this matches an event id only as the whole of it."""
MAX_IP_GROUPS = 10
"""The most groups an ip is written in (`0:0:0:0:0:ffff:198.51.100.7`): longer runs are not read."""
_NOT_A_GROUP = re.compile(r"([^0-9a-z]+)")
_DECIMAL_OCTET = re.compile(r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)")


class GroupRuns:
    """A case-folded text as groups of ASCII letters and digits, and what joins them."""

    def __init__(self, folded: str) -> None:
        pieces = _NOT_A_GROUP.split(folded)
        self.groups, self.joins = pieces[0::2], pieces[1::2]
        self.compact = "".join(self.groups)
        self.bounds = {0}
        end = 0
        for group in self.groups:
            end += len(group)
            self.bounds.add(end)

    def spells(self, compact: str) -> bool:
        """Whether some run of whole groups, joined without their separators, is `compact`."""
        start = self.compact.find(compact)
        while start >= 0:
            if start in self.bounds and start + len(compact) in self.bounds:
                return True
            start = self.compact.find(compact, start + 1)
        return False

    def ip_shaped_runs(self) -> set[str]:
        """Whole groups, runs joined by `.` or `:` only, and 4 decimal octets joined by any one separator (as dots)."""
        runs: set[str] = set()
        for first, group in enumerate(self.groups):
            run = group
            runs.add(run)
            for last in range(first + 1, min(len(self.groups), first + MAX_IP_GROUPS)):
                if self.joins[last - 1] not in (".", ":", "::"):
                    break
                run = f"{run}{self.joins[last - 1]}{self.groups[last]}"
                runs.add(run)
            quad, joins = self.groups[first : first + 4], self.joins[first : first + 3]
            if len(quad) == 4 and all(_DECIMAL_OCTET.fullmatch(o) for o in quad) and all(len(j) == 1 for j in joins):
                runs.add(".".join(quad))
        return runs


def ips_in(folded: str, runs: GroupRuns, short_forms: bool) -> set[str]:
    """The canonical ips the ip-shaped pieces of an event id spell (tokenvault_common.ip_spellings).

    A piece that is no full spelling of an address (`full_ip_spelling`: a bare whole number, 2-3
    dotted numbers without `0x`) is read only with `short_forms`.
    """
    found: set[str] = set()
    for piece in {*runs.ip_shaped_runs(), *dotted_numbers(folded)}:
        if piece and (short_forms or full_ip_spelling(piece)):
            found.update(ips_spelled_by(piece))
    return found


def full_ip_spelling(piece: str) -> bool:
    """Whether a case-folded ip-shaped piece is spelt as an address in full, not a short form.

    Full: IPv6 (a `:`), four dotted parts (`203.0.113.7`, `0313.0.0161.07`), or any part written
    with `0x` (`0xcb007107`, `203.0.0x7307`). Short: a bare whole number (`3405803783`,
    `cb007107`) and 2-3 dotted numbers (`203.0.28935`, `2.5`): what versions, decimals, prices,
    dates and counters are made of.
    """
    return ":" in piece or piece.count(".") == 3 or any(part.startswith("0x") for part in piece.split("."))


def names_device(compact: str, folded: str, runs: GroupRuns) -> bool:
    """Whether a device id's compact form is a run of whole groups of the event id (`folded`, `runs`).

    One shorter than MIN_DEVICE_ID_IN_GROUPS only as the compact form of the whole event id.
    """
    if not compact:
        return False
    if len(compact) < MIN_DEVICE_ID_IN_GROUPS:
        return compact_form(folded) == compact
    return runs.spells(compact)


def names_user(user_id: str, event_id: str) -> bool:
    """Whether a (stripped) user id is the whole event id, or a part of it bounded by no letter or digit.

    The part only for one of at least MIN_USER_ID_IN_GROUPS characters, not digits only.
    """
    if not user_id:
        return False
    if event_id.strip() == user_id:
        return True
    if len(user_id) < MIN_USER_ID_IN_GROUPS or user_id.isdigit():
        return False
    pattern = r"(?<![^\W_])" + re.escape(user_id) + r"(?![^\W_])"
    return re.search(pattern, event_id) is not None
