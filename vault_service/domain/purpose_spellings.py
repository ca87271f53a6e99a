"""What a reference-form purpose could spell of a value of its call: every reading the vault compares.

`values_spelled_by` is compared with the values the very call reveals or erases
(vault_service.service.revealing). The readings come from three modules, one per seam:

- `purpose_runs`: the runs of whole groups (one walk per distinct purpose, which also gives the
  candidates looked up among the stored values: `stored_candidates`, `shaped_as_a_stored_value`);
- `purpose_numbers`: the IPv4 addresses its runs of digits read as by their number;
- `purpose_tokens`: the tokens it could hold, split into pieces (looked up or refused, not spelled).
"""

from __future__ import annotations

from functools import lru_cache

from tokenvault_common.ip_spellings import ips_in_hex_groups, ips_spelled_by
from tokenvault_common.pii_text import dotted_numbers
from vault_service.domain.purpose_numbers import HEX_RUN, ipv4_numbers_in
from vault_service.domain.purpose_runs import group_runs
from vault_service.domain.purpose_shape import SEGMENT_SEPARATORS, WITHOUT_SEPARATORS


@lru_cache(maxsize=64)
def values_spelled_by(purpose: str) -> frozenset[str]:
    """The values (case-folded, as the vault normalizes them) a reference-form `purpose` could spell.

    Every run of whole groups (`GDPR-2026-801-SM-G991B-ATK8Q7ZX` holds `SM-G991B-ATK8Q7ZX`), read
    as a device id as written and without its separators (`compact_form`: `INC-PIXEL7AGX7AS` and
    `INC-PIXEL_7A_GX7AS` both hold `pixel7agx7as`, the compact form of device `PIXEL-7A-GX7AS`),
    and, where its groups are joined by `.` or `:` only, as an ip in any spelling
    (`tokenvault_common.ip_spellings`); every dotted number `inet_aton` reads is an ip too, also
    glued to letters (`INC-V203.0.28935`, `CASE-9V0313.28935`: `dotted_numbers`, as the ETL's
    own-value check reads event ids); every maximal run of at least 7 hex digits inside a group is
    read as an ip too (`INC-ipCB007107`, `INC-VCB007107-2`, `INC-CB007107x`: 203.0.113.7 in hex
    glued to letters, attack 12, finding 5), and so is every window of 7 or 8 hex digits inside a
    run and of 8-10 decimal digits inside a run of digits, read as an IPv4 address
    (`INC-aCB007107`, `INC-CB007107F`: a neighbouring a-f letter makes the run another number;
    review 12, finding 2), as the ETL's own-value check finds an IPv4 address's number forms
    anywhere in an event id; four groups of 1-2 hex digits joined by one repeated separator and two
    groups of 4 hex digits are an IPv4 address in hex (`INC-CB-00-71-07`, `INC-cb00-7107`:
    `ips_in_hex_groups`, the ETL's reader of an event id too; attack 14, finding 5). The windows
    are read in the purpose without its separators (`WITHOUT_SEPARATORS`), so an address's hex
    or decimal number split at any places reads as the unsplit one (`REQ-c6128-e52`,
    `REQ-c61-28e52`, `REQ-332-310-4850`: 198.18.142.82; attack 15, finding 5): still one window
    per width and position, about 2**-32 (2**-28 for 7 hex digits) each to match a given value
    by chance, and compared with the call's own values only, never looked up. The digits of an
    address's dotted form, its octets written one after the other, are read there too, however
    regrouped (`REQ-1981-8174-30`, `REQ-19818-17430`: 198.18.174.30; attack 16, finding 3:
    `purpose_numbers`), compared only as well. A value
    revealed or erased is compared with this set (one or two membership tests per value:
    `vault_service.service.revealing`); it is derived once per
    distinct purpose (cached: a client's purposes repeat). At most 32 groups: at most 528 runs and
    as many compact forms, plus at most about 3 windows per character, a few kB; 64 purposes are
    kept.
    """
    folded = purpose.casefold()
    spelled = set(group_runs(purpose).spelled)
    for dotted in dotted_numbers(folded):
        spelled.update(ips_spelled_by(dotted))
    # Separators are not hex digits, so each run is inside a group; a whole group was read above.
    hex_runs = set(HEX_RUN.findall(folded))
    for hex_run in hex_runs.difference(SEGMENT_SEPARATORS.split(folded)[0::2]):
        spelled.update(ips_spelled_by(hex_run))
    spelled.update(ips_in_hex_groups(folded))
    spelled.update(ipv4_numbers_in(folded.translate(WITHOUT_SEPARATORS)))
    return frozenset(spelled)
