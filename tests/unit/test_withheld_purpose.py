"""An empty purpose in a Detokenize or Erase row is the vault's withheld form, and reports say so.

No client can send an empty purpose (`check_purpose` refuses it, and any other purpose it accepts
starts with a letter), nor one that reads like the marker reports show instead (blanks and
parentheses are not in the reference form), so the two cannot be confused.
"""

from __future__ import annotations

import pytest

from vault_service.domain.errors import InvalidRequest
from vault_service.domain.purpose import WITHHELD_PURPOSE, WITHHELD_SHOWN, check_purpose, purpose_as_shown


@pytest.mark.parametrize("sent", [WITHHELD_PURPOSE, " ", "\t", WITHHELD_SHOWN, "(withheld)"])
def test_no_client_can_send_the_withheld_form_or_its_marker(sent: str) -> None:
    with pytest.raises(InvalidRequest):
        check_purpose(sent)


def test_reports_show_the_withheld_form_as_withheld_and_a_kept_purpose_as_it_is() -> None:
    assert purpose_as_shown(WITHHELD_PURPOSE) == WITHHELD_SHOWN
    assert purpose_as_shown("GDPR-2026-0042") == "GDPR-2026-0042"
