"""A purpose with only its runs of groups that name a stored value withheld (insider round 16, #2).

A purpose naming a value stored for another call (`vault_service.service.stored_values`) was
withheld whole: a producer, who may tokenize any value, stored one serial-shaped device id such as
`INC2026Q3` and blanked every reference of the class `INC-2026Q3-0001`, `INC-2026Q3-0002`... for
everyone. Now only the groups of the runs whose reading is stored are withheld, each maximal run
of them replaced by WITHHELD_SPAN, the rest of the reference kept: `(withheld)-0001`,
`GDPR-2026-801-(withheld)`. A purpose whose every group is withheld keeps nothing
(WITHHELD_PURPOSE, empty), as before.

What is withheld is exactly the runs whose reading (as written, upper or lower case, with its
separators or without) is stored: the groups kept hold no such reading, and the marker stands
between them, so no run across it is read as a value. A purpose spelling a value of its own call,
one not compared with every value of its call, and an Erase's purpose of a stored value's shape are
withheld whole, as before (`vault_service.service.vault_base.TokenVaultBase._kept`).
"""

from __future__ import annotations

from vault_service.domain.purpose_shape import SEGMENT_SEPARATORS, WITHHELD_PURPOSE

WITHHELD_SPAN = "(withheld)"
"""What stands in a kept purpose for a run of groups withheld: parentheses are not in the reference
form, so no purpose a client sent holds it, and an auditor reads it as the vault's."""


def every_group(purpose: str) -> frozenset[int]:
    """The index of each group of a reference-form `purpose` (withholding them all keeps nothing)."""
    return frozenset(range(len(SEGMENT_SEPARATORS.split(purpose)[0::2])))


def with_groups_withheld(purpose: str, withheld: frozenset[int]) -> str:
    """`purpose` with each maximal run of the groups `withheld` (indices) replaced by WITHHELD_SPAN.

    The separators inside a run go with it; those around it stay: `INC-2026Q3-0001` with groups
    0 and 1 withheld is `(withheld)-0001`. Every group withheld: WITHHELD_PURPOSE; none: `purpose`.
    """
    if not withheld:
        return purpose
    pieces = SEGMENT_SEPARATORS.split(purpose)
    groups, joins = pieces[0::2], pieces[1::2]
    if withheld.issuperset(range(len(groups))):
        return WITHHELD_PURPOSE
    kept: list[str] = []
    for index, group in enumerate(groups):
        inside_a_run = index in withheld and index - 1 in withheld
        if index > 0 and not inside_a_run:
            kept.append(joins[index - 1])
        if index not in withheld:
            kept.append(group)
        elif not inside_a_run:
            kept.append(WITHHELD_SPAN)
    return "".join(kept)
