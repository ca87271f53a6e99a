"""What `tokenvault erase` tells the officer: its refusal, the other people's rows erased, a stop at the erase limit.

Words only, from counts the command gives them (tokenvault_cli/erase_reach.py counts; vault_commands.py
runs the command): tokens and counts, never a value nor another person's user id.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from typing import NoReturn

import click

from tokenvault_cli.context import Failure
from tokenvault_cli.erase_reach import PersonsTokens, Reach, RowCheck, plural
from tokenvault_cli.output import Format, write_rows
from tokenvault_cli.row_owners import TokenReach, shown
from tokenvault_client import EraseOutcome, ItemError, RateLimited
from tokenvault_common.erase_outcomes import ERASED_BEFORE

DEAD_LETTERS_STEP = (
    "Next step of this erasure, for the DLQ operator: dead letters (refused events, kept sealed for 14 days)"
    " may still hold these values; delete them with `python -m etl_service dead-letters erase - --yes`, the"
    " person's user_id=, ip= and device_id= lines on standard input (README, Privacy officer). Until then"
    " `dead-letters show` prints them and a `dead-letters resend` stores them again under new tokens. If it"
    " names tokens the vault minted for events it never loaded, erase those too with the command it prints."
)
"""Printed after an erasure: the vault cannot reach the DLQ, whose operator can open every dead letter."""

AFTER_DEAD_LETTERS = (
    "These tokens are those `dead-letters erase` named (--from-dead-letters): this erasure's last step, the DLQ"
    " operator's, is that command's run with --yes until it exits 0; nothing else is left to do for them."
)
"""Printed instead of DEAD_LETTERS_STEP when the officer erases what that step named: no loop back to it (W44-3)."""


ALREADY_ERASED = "already erased (by an earlier erasure)"
"""A --from-dead-letters token's outcome when the vault answers NOT_FOUND saying its value was erased before
(ERASED_BEFORE): erased by the first step, as a rule - done."""

NOT_ISSUED_ADVICE = (
    "tokenvault: with --from-dead-letters a token the vault answers NOT_FOUND for is done only when the vault"
    " says its value was erased before (by the first step, as a rule); for {n} it did not: the vault never issued"
    " them - a token mistyped or cut when the line was copied (compare it with the line `dead-letters erase`"
    " printed), or a string a planted letter recorded - or a vault older than this CLI did not say which (the"
    " first step's output lists the tokens it erased). Their values, if any, are not erased"
)
"""Said on stderr when --from-dead-letters tokens came back NOT_FOUND without ERASED_BEFORE (attack 39, P2)."""


def not_found(outcome: EraseOutcome) -> bool:
    """Whether the vault answered NOT_FOUND for this token (never issued, or erased already)."""
    return isinstance(outcome, ItemError) and outcome.code.name == "NOT_FOUND"


def erased_before(outcome: EraseOutcome) -> bool:
    """Whether the vault answered NOT_FOUND saying the token's value was erased before (not: never issued).

    A vault before attack 39's P2 fix answered both alike ("never issued or already erased"): not counted.
    """
    return not_found(outcome) and isinstance(outcome, ItemError) and outcome.message == ERASED_BEFORE


def say_not_issued(outcomes: Sequence[EraseOutcome], from_dead_letters: bool) -> None:
    """With --from-dead-letters, the advice for NOT_FOUND tokens the vault did not say were erased before."""
    if n := sum(1 for o in outcomes if from_dead_letters and not_found(o) and not erased_before(o)):
        click.echo(NOT_ISSUED_ADVICE.format(n=n), err=True)


def next_step(from_dead_letters: bool) -> str:
    """What is left of the erasure after this one: the DLQ operator's step, or nothing when it named these tokens."""
    return AFTER_DEAD_LETTERS if from_dead_letters else DEAD_LETTERS_STEP


def _people(people: int, named: bool) -> str:
    """`1 other person`, `3 other people`; without a person named, `2 people`."""
    return plural(people, "other person", "other people") if named else plural(people, "person", "people")


def people_rows(people: int, rows: int, named: bool) -> str:
    """`1 other person's 2 rows`, `3 other people's 5 rows`; without a person named, `2 people's 3 rows`."""
    return f"{_people(people, named)}'s {plural(rows, 'row')}"


def refuse_other_people(
    reach: Reach,
    wanted: list[str],
    given: tuple[str, ...],
    purpose: str,
    yes: bool,
    fmt: str,
    as_given: str,
    stale: int | None = None,
    from_dead_letters: bool = False,
    accepted: Sequence[str] = (),
) -> NoReturn:
    """Erase nothing: say, per token, how many other people's rows hold it, and the command that erases anyway.

    `as_given` is `tokenvault` with this command line's connection options, the start of that command;
    `accepted`: the confirmations given that the rows' check took (--accepting-unsigned-rows N, ...), kept in it.
    Tokens and counts only: never a value, nor another person's user id.
    """
    named = bool(reach.person)
    reaching = reach.reaching(wanted)
    where = (
        f"{len(reaching)} of the {len(wanted)} tokens are also in other people's rows of user_logins (not --user-id's)"
        if named
        else f"{len(reaching)} of the {len(wanted)} tokens are in the rows of several people in user_logins"
        + (" (a row that does not verify is one more person)" if any(t.unverified_rows for t in reaching) else "")
    )
    lines = [
        f"  {t.token}: {people_rows(t.other_people, t.other_rows, named)}"
        + (f" (the person's own: {plural(t.their_rows, 'row')})" if named else "")
        for t in reaching
    ]
    if stale is not None:
        head = (
            f"nothing was erased: --including-other-people {stale} does not match the count now,"
            f" {_people(reach.other_people, named)}"
            + (f" ({where})" if reaching else "")
            + " - a decision taken on other figures is not carried out"
        )
    else:
        head = (
            f"nothing was erased: {where}. A token stands for a value, not a person: erasing it takes the value"
            " from every row holding it (a shared address, a family device)"
        )
    unnamed = (
        ""
        if named
        else "\nNo --user-id was given, so whose request this is cannot be told: every person whose rows hold one"
        " of these tokens is counted, the person too. Name the person with --user-id ID to count only the others."
    )

    def command(tokens: Sequence[str], options: Sequence[str], counted: Sequence[str] = accepted) -> str:
        words = [as_given, "erase", *(shlex.quote(t) for t in tokens), "--purpose", shlex.quote(purpose)]
        for user_id in reach.person:
            words += ["--user-id", shlex.quote(user_id)]
        words += [*options, *counted]
        if from_dead_letters:
            words.append("--from-dead-letters")
        if yes:
            words.append("--yes")
        if fmt != Format.TABLE.value:
            words += ["-o", fmt]
        return " ".join(words)

    everyone = command(given, ["--including-other-people", str(reach.other_people)])
    stdin = " (the same tokens on standard input)" if "-" in given else ""
    if reaching:
        proceed = (
            f"In all {people_rows(reach.other_people, reach.other_rows, named)} would lose these values.{unnamed}\n"
            "Keeping their values (GDPR art. 17(3), e.g. for legal claims or an investigation) is your call."
            # Without --user-id every token of several people's rows reaches them all, shared or not (R37-8): what
            # to keep is told once the person is named (review 53, R53-5).
            + (f" {_keeping(reaching, given, accepted, command)}" if named else "")
            + "\n"
            f"To erase them for everyone{stdin}:\n  {everyone}"
        )
    else:
        proceed = f"No other person's row holds these tokens now: run it without --including-other-people{stdin}."
    raise Failure("\n".join([head + ":" if reaching else head + ".", *lines, proceed]))


def _keeping(
    reaching: Sequence[TokenReach], given: Sequence[str], accepted: Sequence[str], command: Callable[..., str]
) -> str:
    """How to keep the shared values and erase the rest: the command, as `refuse_other_people` prints it (W53-5).

    The shared tokens are left out; each one the person's own rows hold is named with --leaving-out, as the check
    of the person's rows asks (attack 50, A50-1) - an officer who only dropped it was refused for a hidden row.
    """
    shared = {t.token for t in reaching}
    theirs = [t.token for t in reaching if t.their_rows]
    named = " and name those the person's own rows hold with --leaving-out" if theirs else ""
    if "-" in given:  # the tokens are on standard input: the command cannot list what to keep
        return f"To keep them, leave those tokens out of the ones on standard input{named}."
    rest = [t for t in dict.fromkeys(given) if t not in shared]
    if not rest:
        return "Keeping them leaves nothing of these tokens to erase."
    # The rows' check counts again for fewer tokens (review 53, R53-2: the counts confirmed for all of them made the
    # command refused as printed): the --accepting-* confirmations stay out of it, any earlier --leaving-out in.
    counted = [
        word
        for option, value in zip(accepted[::2], accepted[1::2], strict=True)
        if not option.startswith("--accepting-")
        for word in (option, value)
    ]
    keep = command(rest, [word for token in theirs for word in ("--leaving-out", shlex.quote(token))], counted)
    return f"To keep them and erase the other {plural(len(rest), 'token')}:\n  {keep}"


def say_other_people_erased(before: Reach, after: Reach, when: str, erased: list[str]) -> None:
    """After an erasure: how many other people's rows lost a value, as counted `when` (`now`: counted again)."""
    reaching = after.reaching(erased)
    if not reaching:
        return
    named = bool(after.person)
    lost = people_rows(after.other_people, after.other_rows, named)
    click.echo(
        f"the values of {len(reaching)} erased token(s) were {'other' if named else 'several'} people's too:"
        f" {lost} in user_logins point nowhere {when}: "
        + "; ".join(f"{t.token}: {people_rows(t.other_people, t.other_rows, named)}" for t in reaching),
        err=True,
    )
    counted_before = {t.token for t in before.reaching()}
    if when == "now" and counted_before <= set(erased) and after.other_rows != before.other_rows:
        click.echo(
            f"({after.other_rows - before.other_rows:+d} row(s) against the count before the erasure: loaded or"
            " removed in between)",
            err=True,
        )


def _limit_said(stopped: RateLimited) -> str:
    """What the vault's refusal says of the limit (its rate and burst), without its own "retry in"."""
    said = stopped.details.split("; retry in ")[0].strip()
    return f"the vault: {said}" if said else "the vault did not say its rate"


def erase_stopped_partway(
    wanted: list[str],
    done: list[EraseOutcome],
    stopped: RateLimited,
    fmt: str,
    from_dead_letters: bool = False,
    person: Sequence[str] = (),
) -> NoReturn:
    """Say which tokens the calls before the limit erased (they were), and which were not sent.

    `person` (--user-id, not --from-dead-letters): the rest, sent with --user-id again, name the tokens erased here
    with --leaving-out - the person's rows still hold them (attack 50, A50-1).
    """
    rows = [
        (t, "erased" if o is None else ALREADY_ERASED if from_dead_letters and erased_before(o) else str(o))
        for t, o in zip(wanted, done, strict=False)
    ]
    rows += [(t, "not sent: erase limit reached") for t in wanted[len(done) :]]
    write_rows(["token", "outcome"], rows, Format(fmt))
    if any(o is None for o in done):
        click.echo(next_step(from_dead_letters), err=True)
    say_not_issued(done, from_dead_letters)
    click.echo(
        f"tokenvault: the erase limit stopped this after {len(done)} of {len(wanted)} tokens (those above are"
        f" sent); the limit lets one more token through in {stopped.retry_after:.0f} s and then refills at its rate"
        f" ({_limit_said(stopped)}): send the {len(wanted) - len(done)} not sent again once it has room for them,"
        " or ask the security team for a larger erase limit",
        err=True,
    )
    if person and not from_dead_letters and (erased := [t for t, o in zip(wanted, done, strict=False) if o is None]):
        kept = " ".join(f"--leaving-out {shlex.quote(t)}" for t in erased)
        click.echo(
            f"With --user-id, add to that command: {kept} (the person's rows still hold the tokens erased here;"
            " the erasure refuses a token of theirs neither given nor left out: attack 50)",
            err=True,
        )
    raise SystemExit(1)


def refuse_tokens_not_the_persons(unheld: Sequence[str], wanted: Sequence[str]) -> NoReturn:
    """Erase nothing: these tokens are held by no verified row whose user id is exactly one of --user-id's (A47-2).

    The count found no one else holding them - no row at all, or only rows that do not verify - so nothing about
    them was checked: the database owner could hide another person's rows from the count (a view, rows deleted
    meanwhile) and have the officer erase that person's values as the person's. Tokens only, never a value.
    """
    lines = [f"  {t}" for t in unheld]
    raise Failure(
        "\n".join(
            [
                f"nothing was erased: {len(unheld)} of the {len(wanted)} tokens are held by no row of user_logins"
                " whose user id is exactly --user-id's and that verifies against the ETL's signature (or is"
                " unsigned and confirmed), so whose values they are cannot be told - another person's, or rows"
                " hidden from the count (attack 47, A47-2):",
                *lines,
                "Leave them out. If a source the database owner does not control shows they are the person's (their"
                " rows deleted for retention, say), erase them on their own without --user-id: every person whose"
                " rows hold them is counted then, each row that does not verify as one more person. Tokens"
                " `dead-letters erase` named take --from-dead-letters.",
            ]
        )
    )


def refuse_persons_tokens_not_given(
    persons: PersonsTokens,
    wanted: Sequence[str],
    given: tuple[str, ...],
    purpose: str,
    person: Sequence[str],
    yes: bool,
    fmt: str,
    as_given: str,
    accepted: Sequence[str] = (),
) -> NoReturn:
    """Erase nothing: the person's own verified rows hold tokens not given; the tokens and the command with them.

    Attack 50, A50-1: the officer's query collecting the person's tokens is his own, unchecked - the database owner
    hid one of the person's rows from it only while it ran, and the erasure left that row's values revealable. The
    erasure reads the person's rows itself (erase_reach.persons_tokens). Tokens only, never a value.
    """
    if persons.too_many:
        raise Failure(
            f"nothing was erased: --user-id's rows of user_logins number {persons.rows:,} (or name more signed lists"
            f" than the command reads), more than the {persons.bound:,} it verifies at once (--max-rows-checked), so"
            " whether they hold tokens not given cannot be told; give --max-rows-checked N with N at least their"
            " number once the security team has seen them (rows past the default may be planted to block this)"
        )
    stdin = "-" in given  # then they go on standard input with the others, not on the command line
    listed = [*given] if stdin else [*given, *persons.ungiven]
    words = [as_given, "erase", *(shlex.quote(t) for t in listed), "--purpose", shlex.quote(purpose)]
    for user_id in person:
        words += ["--user-id", shlex.quote(user_id)]
    words += list(accepted)
    if yes:
        words.append("--yes")
    if fmt != Format.TABLE.value:
        words += ["-o", fmt]
    on_stdin = " (add them to the tokens on standard input)" if stdin else ""
    raise Failure(
        "\n".join(
            [
                f"nothing was erased: --user-id's own rows of user_logins (verified against the ETL's signature)"
                f" hold {plural(len(persons.ungiven), 'token')} you did not give - the query that collected the"
                " person's tokens did not see them all (a row hidden from it, e.g. by the database owner's index or"
                f" row-level security policy, or loaded since: attack 50, A50-1); the {len(wanted)} given are"
                " not erased alone:",
                *(f"  {t}" for t in persons.ungiven),
                f"Erase them with the others{on_stdin} (a token erased before is reported so; report a query that"
                " missed rows to the security team):",
                f"  {' '.join(words)}",
                "or keep one on purpose - a value other people share (GDPR art. 17(3)), one erased before - by naming"
                " it with --leaving-out TOKEN.",
            ]
        )
    )


def say_tokens_in_no_row(unheld: Sequence[str]) -> None:
    """Without --user-id: how many tokens no verified row holds (erased; whose they are, user_logins cannot tell)."""
    if unheld:
        click.echo(
            f"note: {len(unheld)} of these tokens are held by no row of user_logins that verifies, so whose values"
            " they are cannot be told there (name the person with --user-id to have that checked)",
            err=True,
        )


FAILING_ROWS_NAMED = 10
"""The rows that do not verify a refusal names (event id, signed list); `audit login-rows` lists them all."""


def rows_named(rows: Sequence[tuple[str, str]]) -> str:
    """`event E (list M); ...` for the first FAILING_ROWS_NAMED rows, and how many more (no user id, token, value)."""
    named = "; ".join(f"event {shown(e)} (list {m})" for e, m in rows[:FAILING_ROWS_NAMED])
    more = len(rows) - FAILING_ROWS_NAMED
    return named + (f"; and {more} more" if more > 0 else "")


def failing_rows_refusal(
    check: RowCheck, confirmed: int | None, nothing: str, erase: bool, stale: str, audit: str = "`audit login-rows`"
) -> str:
    """The refusal for rows that do not verify: their count, their event ids and lists, and (erase) the override.

    No user id, token or value: an event id and a list id are what the security team looks a row up by. `audit`:
    the security team's `audit login-rows` that lists them all, as it runs with these settings (walk47, W47-1).
    """
    given = "" if confirmed is None else f"--accepting-unverified-rows {confirmed} does not match the count now; "
    named = "; ".join(f"event {shown(e)} (list {m})" for e, m in check.failing_rows[:FAILING_ROWS_NAMED])
    more = len(check.failing_rows) - FAILING_ROWS_NAMED
    named += f"; and {more} more ({audit})" if more > 0 else ""
    elsewhere = check.unverified() - check.failing
    named += f"; and {plural(elsewhere, 'other row')} of their load batches ({audit})" if elsewhere else ""
    override = (
        f"\nOnce the security team has looked at them, --accepting-unverified-rows {check.unverified()} erases anyway:"
        " a row that does not verify is never taken for the person's - each counts as one more other person"
        " (--including-other-people), whatever user id it shows"
        if erase
        else ""
    )
    return (
        f"{given}{check.failing} row(s) of user_logins holding these tokens do not verify against the ETL's"
        " signature: changed or written outside the ETL (tokens moved between people, a user id changed, a"
        f" row planted); {nothing}; report it to the security team: {named}"
        + override
        + (f"\nBesides, {stale}" if stale else "")
    )
