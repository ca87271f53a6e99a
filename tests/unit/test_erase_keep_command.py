"""The erase refusal's two ways on (walk 53, W53-5; review 53, R53-2 and R53-5), as the officer reads them.

`refuse_other_people` with the counts user_logins would give (the stack tests in tests/cli run the printed
commands against the real stack: test_cli_erase_shared_values.py, test_a47_erase_unverified_rows.py).
"""

from __future__ import annotations

import shlex

import pytest

from tokenvault_cli.context import Failure
from tokenvault_cli.erase_messages import refuse_other_people
from tokenvault_cli.erase_reach import Reach
from tokenvault_cli.row_owners import TokenReach


def _refusal(reach: Reach, given: tuple[str, ...], accepted: tuple[str, ...] = ()) -> str:
    with pytest.raises(Failure) as refused:
        refuse_other_people(reach, list(given), given, "GDPR-1", True, "table", "tokenvault", accepted=accepted)
    return str(refused.value)


def _commands(text: str) -> list[list[str]]:
    return [shlex.split(line) for line in text.splitlines() if line.strip().startswith("tokenvault ")]


def test_with_the_person_named_the_keep_command_erases_the_rest_and_names_the_shared_token() -> None:
    reach = Reach(("p-1",), {"ip_S": TokenReach("ip_S", 1, 2, 1), "dev_O": TokenReach("dev_O", 1, 0, 0)}, 1, 2)
    text = _refusal(reach, ("ip_S", "dev_O"), ("--accepting-unverified-rows", "1", "--leaving-out", "ip_K"))
    keep, everyone = _commands(text)
    assert keep[:3] == ["tokenvault", "erase", "dev_O"] and keep[keep.index("--leaving-out", 4) + 1] == "ip_S"
    assert "--accepting-unverified-rows" not in keep and "ip_K" in keep  # counts again; earlier choices kept
    assert everyone[2:4] == ["ip_S", "dev_O"] and everyone[everyone.index("--including-other-people") + 1] == "1"
    assert "--accepting-unverified-rows" in everyone


def test_without_a_person_named_no_keep_command_is_offered() -> None:
    """Review 53, R53-5: without --user-id tokens of different people all reach them, shared or not; 'keeping them
    leaves nothing to erase' misled. The refusal asks for the person instead."""
    reach = Reach((), {"ip_A": TokenReach("ip_A", 0, 1, 2), "dev_B": TokenReach("dev_B", 0, 1, 2)}, 2, 2)
    text = _refusal(reach, ("ip_A", "dev_B"))
    assert "Keeping them leaves nothing" not in text and "To keep them" not in text
    assert "Name the person with --user-id ID" in text and len(_commands(text)) == 1
