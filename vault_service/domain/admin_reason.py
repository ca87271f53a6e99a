"""An admin command's reason (its change ticket), as the audit log keeps it - for good.

The key commands' intent and outcome rows are hash-chained and never erased: an ip address or a
device id written there outlives the person's erasure (attack 24, F5). A reason must be of a
Detokenize or Erase purpose's form (`purpose_shape.unfit_purpose`: a reference such as CHG-1234,
no personal data) and, as an Erase's purpose is withheld for it, hold no run shaped as a stored
device id or address (`purpose_runs.shaped_as_a_stored_value`: read from the text alone, it tells
nothing of what is stored).
"""

from __future__ import annotations

from vault_service.domain.errors import InvalidRequest
from vault_service.domain.purpose_runs import shaped_as_a_stored_value
from vault_service.domain.purpose_shape import INSTEAD, unfit_purpose


def unfit_reason(reason: str) -> str | None:
    """Why `reason` may not be kept in the audit log (a message a person can act on), or None."""
    unfit = unfit_purpose(reason)
    if unfit is None and shaped_as_a_stored_value(reason):
        unfit = f"it holds what has the shape of a device id or an ip address; {INSTEAD}"
    if unfit is None:
        return None
    return f"the audit log keeps it for good, as a reveal's purpose: {unfit}"


def check_reason(reason: str) -> None:
    """Raise InvalidRequest saying why, unless `reason` may be kept in the audit log."""
    unfit = unfit_reason(reason)
    if unfit is not None:
        raise InvalidRequest(f"reason refused: {unfit}")
