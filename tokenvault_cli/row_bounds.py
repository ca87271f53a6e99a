"""How many rows of user_logins a command verifies at once: the --max-rows-checked option and the refusals past it.

`erase`, `reveal --verify-rows` and `audit login-rows` read the rows they verify into memory, so they stop at a
bound (MAX_ROWS_CHECKED by default) and check nothing past it. A bound that nothing could lift made one value
genuinely held by more rows (a carrier's NAT address) impossible to erase, and a busy day impossible to audit
(walk47, W47-18, W47-19): --max-rows-checked raises it, up to MAX_ROWS_CEILING, the officer knowing the rows may be
planted (attack 48, A48-2) - the refusal says both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from tokenvault_cli.context import Failure
from tokenvault_cli.erase_reach import MAX_LIST_BYTES, MAX_ROWS_CEILING, MAX_ROWS_CHECKED, RowCheck

CANNOT_CHECK_EXIT = 2
"""`audit login-rows`'s exit code when it checked nothing (past a bound): not 1, which says rows do not verify."""


class NothingChecked(Failure):
    """A refusal to check past a bound (W47-19): exit 2, as the CLI's other refusals to run as asked."""

    exit_code = CANNOT_CHECK_EXIT


def max_rows_option(what: str) -> Callable[[Any], Any]:
    """The --max-rows-checked option of a command verifying rows of user_logins; `what`: the rows it verifies."""
    return click.option(
        "--max-rows-checked",
        "max_rows_checked",
        metavar="N",
        type=click.IntRange(1, MAX_ROWS_CEILING),
        default=MAX_ROWS_CHECKED,
        show_default=True,
        help=f"Verify at most N {what} (at most {MAX_ROWS_CEILING:,}; about 1.4 KiB of memory a row); more: nothing"
        " is done and the refusal says how many there are. Raise it only once the security team has seen them:"
        " rows past the default may be planted to block the command.",
    )


def _lists_bound(check: RowCheck) -> str:
    return (
        f"rows naming over {MAX_LIST_BYTES // 2**20} MiB of signed lists, or more rows naming those lists than they"
        f" list by over {check.bound:,}"
    )


LISTS_OVERNAMED_SHOWN = 5
"""How many lists named by more rows than they list a refusal names (the most beyond first)."""


def overnamed(check: RowCheck) -> str:
    """`list M: N rows name it, it lists K; ...` for the lists named beyond what they list (attack 49, A49-4)."""
    said = "; ".join(
        f"list {m}: {naming:,} rows name it, it lists {listing:,}"
        for m, naming, listing in check.lists_overnamed[:LISTS_OVERNAMED_SHOWN]
    )
    more = len(check.lists_overnamed) - LISTS_OVERNAMED_SHOWN
    return said + (f"; and {more} more list(s)" if more > 0 else "")


def _overnamed_rows(check: RowCheck, nothing: str) -> str:
    """Erase's or reveal's refusal when rows naming the rows' lists beyond what they list are past the bound."""
    beyond = sum(naming - listing for _, naming, listing in check.lists_overnamed)
    raise_it = (
        f"--max-rows-checked {beyond} reads them all (each then counts as a row changed in its batch, which"
        " --accepting-unverified-rows N confirms once the security team has looked)"
        if beyond <= MAX_ROWS_CEILING
        else f"they are more than this command reads ({MAX_ROWS_CEILING:,})"
    )
    return (
        f"{beyond:,} more rows of user_logins name the signed lists of the rows holding these tokens than those lists"
        f" list ({overnamed(check)}), more than are read beyond them (--max-rows-checked {check.bound:,}); {nothing}."
        " A list lists each row of its load batch once: the others are rows no ETL load made, which may be planted"
        " to block it (the ETL's database role can insert rows naming a list it made) - report it to the security"
        " team, who count them by list with `tokenvault --as security audit login-rows --token TOKEN` and have the"
        f" database owner delete them; {raise_it}"
    )


def too_many_rows(check: RowCheck, nothing: str) -> str:
    """Erase's or reveal --verify-rows' refusal past the bound: how many, may be planted, --max-rows-checked."""
    if check.lists_overnamed:  # attack 49, A49-4: which list, by how many rows
        return _overnamed_rows(check, nothing)
    if check.lists_too_large:
        found = (
            "the rows of user_logins holding these tokens name more signed lists than can be verified against the"
            f" ETL's signature ({_lists_bound(check)})"
        )
        raise_it = f"if they are genuine, --max-rows-checked N (up to {MAX_ROWS_CEILING:,}) lifts the second bound only"
    else:
        found = (
            f"{check.rows:,} rows of user_logins hold these tokens, more than are verified against the ETL's"
            f" signature (--max-rows-checked {check.bound:,})"
        )
        raise_it = (
            f"if they are genuine (a value shared that widely), give --max-rows-checked {check.rows} to verify them all"
            if check.rows <= MAX_ROWS_CEILING
            else f"they are more than this command verifies ({MAX_ROWS_CEILING:,}) even if genuine"
        )
    return (
        f"{found}; {nothing}. They may be rows planted to block it (the ETL's database role can insert rows holding"
        " a token, and lists of its own): report it to the security team, who list them by signed list with"
        f" `tokenvault --as security audit login-rows --token TOKEN`; {raise_it}"
    )


def too_many_in_range(check: RowCheck) -> str:
    """`audit login-rows --since/--until`'s refusal past the bound (W47-19): --max-rows, a shorter range, --token."""
    if check.lists_too_large:
        what = f"signed lists in that range than are checked at once ({_lists_bound(check)})"
    else:
        what = f"rows of user_logins were created in that range than are checked at once (over {check.bound:,})"
    return (
        f"more {what}: give --max-rows-checked N (up to {MAX_ROWS_CEILING:,}), a shorter range (--until), or look"
        " by token (--token); nothing checked"
    )
