"""Which groups of a reference-form purpose read as a model's or a serial's, and which continue a date or a version.

A run of groups is looked up as another call's device id only when it holds a serial-shaped group
(`purpose_runs.group_runs`, review 15, finding 1), and an Erase's purpose is withheld by its shape
only when such a group is no date's or release number's part (`continues_a_date_or_version`,
review 17, finding 5). Both rules read the groups alone, never the vault.
"""

from __future__ import annotations

import re

_SERIAL_SHAPED = re.compile(r"(?=[A-Za-z0-9]*[A-Za-z])(?=[A-Za-z0-9]*[0-9])(?![A-Za-z]+[0-9]+$)[A-Za-z0-9]+", re.ASCII)
"""A group mixing letters and digits otherwise than as a word and its number (`G991B`, `7A`,
`a1b2c3d4e5f60718`, `ATK8Q7ZX`; not `INC2026`, `Q3`, `step2`): the group of a model or serial."""
_DATE_OR_REVISION = re.compile(r"[0-9]+[A-Za-z][0-9]*", re.ASCII)
"""A group of digits with one letter after them, and maybe digits after it (`1b`, `2a`, `17b`,
`2026Q3`, `04T1200`): a revision suffix, a period or a time when it continues a date or a number."""
_YEAR_AND_PERIOD = re.compile(r"(?:19|20)[0-9]{2}[A-Za-z][0-9]{1,2}", re.ASCII)
"""A year, a letter and its number: a quarter, half, month or week (`2026Q3`, `2026H2`, `2026W49`)."""


def serial_groups(groups: list[str]) -> tuple[list[bool], list[bool]]:
    """Per group: whether it is serial-shaped (`_SERIAL_SHAPED`), and whether it is so by the shape rule too.

    The second list is the first without the groups that continue a date or a release number
    (`continues_a_date_or_version`), which the shape rule of an Erase does not read as a model or
    serial; the lookup reads both alike. Computed only when some group is serial-shaped.
    """
    serial = [_SERIAL_SHAPED.fullmatch(group) is not None for group in groups]
    if not any(serial):
        return serial, serial
    by_shape = [is_serial and not continues_a_date_or_version(groups, i) for i, is_serial in enumerate(serial)]
    return serial, by_shape


def continues_a_date_or_version(groups: list[str], index: int) -> bool:
    """Whether group `index` is a date's or a release number's part rather than a model or serial (review 17, #5).

    A group of digits with one letter (`_DATE_OR_REVISION`) right after a group of digits
    (`REL-2026.12.04.1b`, `CHG-2026-12-04-2a`, `BUILD-2026.4.17b`: a revision suffix), or a year
    with a period (`2026Q3`). A model's group with a digit first follows its make's word
    (`PIXEL-7A`), and a serial holds more than one letter or starts with one (`G991B`, `ATK8Q7ZX`).
    """
    group = groups[index]
    if _YEAR_AND_PERIOD.fullmatch(group):
        return True
    return index > 0 and groups[index - 1].isdigit() and _DATE_OR_REVISION.fullmatch(group) is not None
