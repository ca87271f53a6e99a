"""row_owners.reach_of_rows: whose rows hold the tokens, by exact user id, a row that does not verify nobody's own.

Rows as ROWS_SQL returns them: (event_id, user_id, masked_ip, masked_device_id, create_date, row_manifest).
Counted against real PostgreSQL in tests/cli/test_a47_*.py; here the cases a stack test would take minutes for.
"""

from __future__ import annotations

from tokenvault_cli.row_owners import TokenReach, reach_of_rows, shown


def _row(user_id: str | None, ip: str | None, device: str | None = None) -> tuple[object, ...]:
    return ("e", user_id, ip, device, None, None)


def test_user_ids_differing_in_case_or_punctuation_are_two_people() -> None:
    rows = [_row("a47-ann-x", "ip_A"), _row("A47-ANN-X", "ip_B"), _row("a47annx", "ip_A")]
    named = reach_of_rows(rows, set(), ["ip_A", "ip_B"], ["a47-ann-x"])
    assert named.held["ip_A"] == TokenReach("ip_A", 1, 1, 1)
    assert named.held["ip_B"] == TokenReach("ip_B", 0, 1, 1)
    assert (named.other_people, named.other_rows, named.unheld) == (2, 2, ("ip_B",))
    unnamed = reach_of_rows(rows, set(), ["ip_A", "ip_B"], [])
    assert (unnamed.other_people, unnamed.other_rows) == (3, 3)  # three people, every token reaches them all


def test_tokens_match_exactly_not_by_case() -> None:
    rows = [_row("p", "ip_Aa"), _row("q", "ip_aA")]
    reach = reach_of_rows(rows, set(), ["ip_Aa"], ["p"])
    assert reach.held == {"ip_Aa": TokenReach("ip_Aa", 1, 0, 0)} and reach.unheld == ()


def test_a_row_that_does_not_verify_is_nobodys_own_and_one_more_person_each() -> None:
    rows = [_row("p", "ip_1", "dev_1"), _row("p", "ip_1"), _row("someone", "ip_1"), _row("someone", "dev_1")]
    reach = reach_of_rows(rows, {1, 2, 3}, ["ip_1", "dev_1"], ["p"])
    assert reach.held["ip_1"] == TokenReach("ip_1", 1, 2, 2)  # the row labelled p does not count as p's
    assert reach.held["dev_1"] == TokenReach("dev_1", 1, 1, 1)
    assert (reach.other_people, reach.other_rows, reach.unheld) == (3, 3, ())
    only_untrusted = reach_of_rows(rows, {0, 1, 2, 3}, ["ip_1", "dev_1"], ["p"])
    assert only_untrusted.unheld == ("ip_1", "dev_1")  # no trusted row of p holds them


def test_rows_without_a_user_id_are_one_more_person_and_tokens_in_no_row_are_unheld() -> None:
    rows = [_row(None, "ip_1"), _row(None, "ip_2"), _row("p", "ip_3")]
    reach = reach_of_rows(rows, set(), ["ip_1", "ip_2", "ip_3", "ip_9"], ["p"])
    assert reach.held["ip_1"] == TokenReach("ip_1", 0, 1, 1)
    assert (reach.other_people, reach.other_rows) == (1, 2)
    assert reach.unheld == ("ip_1", "ip_2", "ip_9")
    unnamed = reach_of_rows(rows, {2}, ["ip_1", "ip_3", "ip_9"], [])
    assert unnamed.unheld == ("ip_3", "ip_9")  # without a person: held by no trusted row at all


def test_one_persons_tokens_without_a_person_named_reach_no_one() -> None:
    rows = [_row("p", "ip_1", "dev_1"), _row("p", "ip_1", "dev_2")]
    reach = reach_of_rows(rows, set(), ["ip_1", "dev_1", "dev_2"], [])
    assert (reach.other_people, reach.other_rows, reach.unheld) == (0, 0, ())


def test_names_the_owner_chose_are_shown_printable_and_short() -> None:
    assert shown("user_id") == "user_id"
    assert shown("a\x1b[31mb") == repr("a\x1b[31mb") and len(shown("x" * 500)) < 80


def test_without_a_person_a_lone_row_that_does_not_verify_is_one_more_person() -> None:
    """Review 47, R47-5: the A41-1 swap victim's token, held only by the changed (failing) row, reached no one."""
    rows = [_row("A", "ip_B")]
    reach = reach_of_rows(rows, {0}, ["ip_B"], [])
    assert reach.held["ip_B"] == TokenReach("ip_B", 0, 1, 1) and reach.held["ip_B"].unverified_rows == 1
    assert (reach.other_people, reach.other_rows) == (1, 1)
    trusted = reach_of_rows(rows, set(), ["ip_B"], [])
    assert (trusted.other_people, trusted.other_rows) == (0, 0)  # one verified person's row: theirs
