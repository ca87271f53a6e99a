"""A purpose holding a token of the call split by separators is refused (attack 14, finding 7).

`_TOKEN_BODY` needs one run of 20 token characters; `INC-15F8NFzd.mvrRBY3B.KkrLFA` (a token's
random part split by `.`, `:`, `/` or `#`) is three short runs, and was kept in the audit log.
"""

from __future__ import annotations

import pytest

from vault_service.domain.errors import InvalidRequest
from vault_service.domain.purpose import MIN_TOKEN_PIECE, check_names_no_token_of, token_ids_in, unfit_purpose

TOKEN = "ip_15F8NFzdmvrRBY3BKkrLFA"
BODY = TOKEN.removeprefix("ip_")


@pytest.mark.parametrize("separator", list(".:/#"))
def test_a_token_of_the_call_split_by_a_separator_is_refused(separator: str) -> None:
    purpose = "INC-" + separator.join([BODY[:8], BODY[8:16], BODY[16:]])
    assert unfit_purpose(purpose) is None  # the shape check alone lets it pass
    with pytest.raises(InvalidRequest) as refused:
        check_names_no_token_of(purpose, [TOKEN])
    assert BODY[:8] not in str(refused.value) and "INC-4821" in str(refused.value)


def test_halves_pieces_and_other_case_are_refused() -> None:
    for purpose in (f"INC-{BODY[:11]}.{BODY[11:]}", f"CASE-{BODY[3:15].lower()}", f"INC-{BODY[:6]}#{BODY[6:12]}"):
        with pytest.raises(InvalidRequest):
            check_names_no_token_of(purpose, ["dev_" + "x" * 22, TOKEN])


def test_a_token_with_dashes_or_underscores_is_found_without_them() -> None:
    token = "dev_ab-CD_ef12GH34ij56KL"
    with pytest.raises(InvalidRequest):
        check_names_no_token_of("INC-abCDef12.GH34ij56KL", [token])


def test_references_and_pieces_shorter_than_the_minimum_pass() -> None:
    short = f"INC-{BODY[: MIN_TOKEN_PIECE - 1]}"
    for purpose in ("INC-4821", "GDPR-2026-0042", short, f"INC-{BODY[2:5]}.{BODY[9:16]}"):
        check_names_no_token_of(purpose, [TOKEN])
    check_names_no_token_of(f"INC-{BODY[:8]}.{BODY[8:16]}", [])  # a call naming no token: nothing to compare


def test_the_token_ids_a_purpose_could_hold_split_are_read_for_every_type() -> None:
    ids = token_ids_in(f"INC-{BODY[:8]}.{BODY[8:16]}#{BODY[16:]}")
    assert {TOKEN, "dev_" + BODY} <= ids
    dashed = "dev_ab-CD_ef12GH34ij56KLmn"  # a random part holding - and _: read with them kept
    assert dashed in token_ids_in("INC-ab-CD_ef12.GH34ij56KLmn")
    assert token_ids_in("GDPR-2026-0042") == frozenset()  # shorter than a random part: none
