"""Subcommands that call the vault as a client: reveal, erase, tokenize."""

from __future__ import annotations

import shlex
import sys
from collections import Counter
from collections.abc import Sequence
from typing import cast

import click
from click.core import ParameterSource
from rich.markup import escape

from tokenvault_cli.context import Context, Failure, SettingsFailure, vault_errors
from tokenvault_cli.erase_messages import (
    ALREADY_ERASED,
    erase_stopped_partway,
    erased_before,
    failing_rows_refusal,
    next_step,
    people_rows,
    refuse_other_people,
    refuse_persons_tokens_not_given,
    refuse_tokens_not_the_persons,
    rows_named,
    say_not_issued,
    say_other_people_erased,
    say_tokens_in_no_row,
)
from tokenvault_cli.erase_reach import MAX_ROWS_CHECKED, Reach, RowCheck, count_reach, plural
from tokenvault_cli.login_row_keys_commands import login_rows_command, refresh_command
from tokenvault_cli.output import FORMAT_OPTION, Format, write_rows
from tokenvault_cli.progress import stderr, tracked
from tokenvault_cli.query import (
    PRODUCT_TOKEN_COLUMNS,
    QueryError,
    distinct_tokens,
    other_token_columns,
    revealed_result,
    run_query,
    token_columns,
)
from tokenvault_cli.row_bounds import max_rows_option, too_many_rows
from tokenvault_cli.settings import Settings, SettingsError
from tokenvault_client import ChunkLimits, EraseOutcome, ItemError, RateLimited, Revealed, TokenType
from tokenvault_common.erase_outcomes import PURPOSE_PLACEHOLDER, USER_ID_PLACEHOLDER
from tokenvault_common.login_row_signatures import LOGIN_ROWS_KEY

PURPOSE_HELP = (
    "Why: a case or ticket reference such as INC-4821 or GDPR-2026-0042 (letters and digits in groups"
    " joined by - _ / . : #, starting with a letter, at most 64 characters; no blanks, never personal data"
    " nor the value concerned). Written to the audit log for good."
)


def _from_stdin(items: Sequence[str]) -> list[str]:
    """The items, with `-` replaced by the lines of standard input."""
    if "-" not in items:
        return list(items)
    lines = [line.strip() for line in sys.stdin if line.strip()]
    return [x for item in items for x in (lines if item == "-" else [item])]


def _refuse_unfilled_placeholders(person: Sequence[str], purpose: str) -> None:
    """Stop (exit 2, nothing counted nor erased) the line `dead-letters erase` printed, run before it is filled in.

    Its --user-id USER_ID and --purpose REFERENCE are the officer's to fill from the request: left as printed,
    the count would take no row for the person's and the audit log would keep "REFERENCE" for the erasure's
    reason (review 38, R38-6).
    """
    unfilled = [f"--user-id {USER_ID_PLACEHOLDER}"] if USER_ID_PLACEHOLDER in person else []
    unfilled += [f"--purpose {PURPOSE_PLACEHOLDER}"] if purpose == PURPOSE_PLACEHOLDER else []
    if unfilled:
        raise click.UsageError(
            f"{' and '.join(unfilled)} of the line `dead-letters erase` printed are placeholders: put the erasure"
            " request's user id(s) (--user-id once per account) and its reference; nothing was erased"
        )


def _refuse_tokens_given_and_left_out(wanted: Sequence[str], kept: Sequence[str]) -> None:
    """Stop (exit 2, nothing counted nor erased) a token both given to erase and named with --leaving-out.

    --leaving-out names a token of the person's rows NOT given: given too, it would be erased all the same, and the
    refusal's command to go on would carry both (walk49, W49-4).
    """
    both = [token for token in dict.fromkeys(kept) if token in wanted]
    if both:
        raise click.UsageError(
            f"{', '.join(both)}: given to erase and named with --leaving-out at once; to keep a token, leave it out"
            " of the tokens to erase and name it with --leaving-out only; nothing was erased"
        )


def _nothing_given(items: Sequence[str], what: str) -> bool:
    """True (and says so) when standard input brought no items: no call is made then."""
    if items:
        return False
    stderr.print(f"no {what} on standard input: nothing was sent to the vault")
    return True


def _summarize_errors(outcomes: Sequence[object], what: str) -> int:
    """Print a count per error code on stderr; the number of failed items."""
    codes = Counter(o.code.name for o in outcomes if isinstance(o, ItemError))
    if codes:
        stderr.print(
            f"{sum(codes.values())} of {len(outcomes)} {what}: " + ", ".join(f"{n} {c}" for c, n in codes.items())
        )
    return sum(codes.values())


def _column_names(text: str | None) -> list[str] | None:
    """--columns a,b as names; None when not given."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise click.BadParameter("name at least one column, e.g. --columns masked_ip", param_hint="--columns")
    return names


@click.command()
@click.argument("tokens", nargs=-1)
@click.option("--purpose", "-p", required=True, help=PURPOSE_HELP)
@click.option(
    "--query",
    "-q",
    help="SQL run as the analysts' read-only database role; its columns"
    f" {' and '.join(PRODUCT_TOKEN_COLUMNS)} are revealed, or those named with --columns.",
)
@click.option(
    "--columns",
    "columns_text",
    metavar="NAME,...",
    help="With --query: reveal these result columns (and only these) instead of masked_ip and"
    " masked_device_id; each must hold only tokens. A token in any other column is never sent to the vault.",
)
@FORMAT_OPTION
@click.option("--with-tokens", is_flag=True, help="With --query: keep each revealed column's tokens beside its values.")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=1000, show_default=True, help="Tokens per call.")
@click.option("--max-rows", type=click.IntRange(1), default=1_000_000, show_default=True, help="Refuse larger results.")
@click.option(
    "--verify-rows",
    is_flag=True,
    help="With --query: first verify every row of user_logins holding the tokens to reveal against the ETL's"
    " signature (--login-row-keys) and reveal nothing if one does not verify (rows the database owner changed).",
)
@click.option(
    "--accepting-unsigned-rows",
    "unsigned_confirmed",
    metavar="N",
    type=click.IntRange(0),
    help="With --verify-rows: reveal even though N rows holding the tokens carry no signature (N as counted).",
)
@max_rows_option("rows of user_logins holding the tokens (with --verify-rows)")
@click.pass_obj
@vault_errors
def reveal(
    ctx: Context,
    tokens: tuple[str, ...],
    purpose: str,
    query: str | None,
    columns_text: str | None,
    fmt: str,
    with_tokens: bool,
    batch_size: int,
    max_rows: int,
    verify_rows: bool,
    unsigned_confirmed: int | None,
    max_rows_checked: int,
) -> None:
    """Reveal the values behind TOKENS (`-` reads them from stdin), or the token columns of a --query.

    Values are shown as your policy allows (plain or masked); every call is audited with the
    purpose. Rate limits are waited out (a progress bar shows it on long runs). With --query,
    only the columns masked_ip and masked_device_id are revealed (or those named with
    --columns): tokens found elsewhere are printed as they are, so nobody who can write rows
    makes you reveal what you did not ask for. With --verify-rows, the rows of user_logins holding
    the tokens are first verified against the ETL's signature, as `erase` does: a row the database
    owner changed (tokens swapped between people) reveals nothing (exit 1), nor does a token no verified
    row holds, user_logins replaced by a view, or a nondeterministic collation on its columns (under which
    `WHERE user_id = '...'` returns other user ids' rows).

    \b
    tokenvault --stack .stack --as analyst reveal ip_7qwKnwTSu2ecvWSU-DjgMw --purpose CASE-123
    tokenvault --stack .stack --as analyst reveal --purpose CASE-123 -o csv --query "SELECT * FROM user_logins"
    """  # noqa: D301 - \b keeps click from rewrapping the examples
    if bool(tokens) == bool(query):
        raise click.UsageError("give either TOKENS or --query")
    if (verify_rows or unsigned_confirmed is not None) and not query:
        raise click.UsageError("--verify-rows and --accepting-unsigned-rows go with --query")
    if unsigned_confirmed is not None and not verify_rows:
        raise click.UsageError("--accepting-unsigned-rows goes with --verify-rows")
    named = _column_names(columns_text)
    if query:
        verify = (unsigned_confirmed, max_rows_checked) if verify_rows else None
        _reveal_query(ctx, query, named, purpose, Format(fmt), with_tokens, batch_size, max_rows, verify)
        return
    if named is not None:
        raise click.UsageError("--columns goes with --query")
    wanted = _from_stdin(tokens)
    if _nothing_given(wanted, "tokens"):
        return
    limits = ChunkLimits(max_items=batch_size)
    with tracked("revealing", len(wanted), show_from=5000) as tracker, ctx.client(tracker.waiting, limits) as vault:
        outcomes = vault.detokenize(wanted, purpose, tracker.done)
    rows = [
        (t, o.token_type.value if o.token_type else "", o, o.reveal.value)
        if isinstance(o, Revealed)
        else (t, "", None, str(o))
        for t, o in zip(wanted, outcomes, strict=True)
    ]
    write_rows(["token", "type", "value", "reveal"], rows, Format(fmt))
    if _summarize_errors(outcomes, "tokens revealed nothing"):
        raise SystemExit(1)


def _reveal_query(
    ctx: Context,
    query: str,
    named: list[str] | None,
    purpose: str,
    fmt: Format,
    with_tokens: bool,
    batch_size: int,
    max_rows: int,
    verify: tuple[int | None, int] | None = None,
) -> None:
    """`verify`: (unsigned rows confirmed, most rows verified): verify the rows holding the tokens first; None: not."""
    try:
        result = run_query(ctx.settings.dsn(), query, max_rows)
        columns = token_columns(result, named)
    except QueryError as error:
        raise Failure(str(error)) from None
    except SettingsError as error:
        raise SettingsFailure(str(error)) from None
    skipped = other_token_columns(result, columns)
    if skipped:
        stderr.print(
            f"column(s) {escape(', '.join(skipped))} hold tokens but were not revealed (by default only"
            f" {', '.join(PRODUCT_TOKEN_COLUMNS)} are): name the columns you mean with --columns"
        )
    if not distinct_tokens(result, columns):
        stderr.print("no token in the columns to reveal: nothing to reveal (nothing was sent to the vault)")
        write_rows(result.columns, result.rows, fmt, records_when_narrow=True)
        return
    verified = ""
    if verify is not None:  # attack 41, A41-1: the rows are the ETL's as it loaded them, or nothing is revealed
        tokens = distinct_tokens(result, columns)
        reach = _count_reach(
            ctx, tokens, [], "nothing was revealed", verify=True, why=REVEAL_READS, exact=True, max_rows=verify[1]
        )
        _refuse_rows_not_signed(ctx, reach.check, verify[0], "revealing nothing")
        if reach.unheld:  # attack 47, A47-2: a token no row verified holds - nothing about it was checked
            raise Failure(
                f"{len(reach.unheld)} of the {len(tokens)} tokens to reveal are held by no row of user_logins that"
                " verifies against the ETL's signature (rows hidden from the check, or tokens from elsewhere), so"
                " the rows they came from cannot be verified; revealing nothing"
            )
        verified = _verified_first(reach.check)
    outcomes: list[object] = []

    def reveal_all(tokens: list[str]) -> list[object]:
        limits = ChunkLimits(max_items=batch_size)
        with (
            tracked(f"revealing {len(tokens)} tokens", len(tokens), show_from=2000) as tracker,
            ctx.client(tracker.waiting, limits) as vault,
        ):
            outcomes.extend(vault.detokenize(tokens, purpose, tracker.done))
        if tracker.waits:
            stderr.print(f"waited {tracker.waited:.1f} s in {tracker.waits} pause(s) for the vault's rate limit")
        return outcomes

    revealed = revealed_result(result, columns, reveal_all, with_tokens)  # type: ignore[arg-type]
    # Blocks when the table does not fit: folded into 80 columns each user id was cut in two lines (W48-11).
    write_rows(revealed.columns, revealed.rows, fmt, records_when_narrow=True)
    names = escape(", ".join(result.columns[i] for i in columns))
    stderr.print(
        f"{len(result.rows)} row(s); revealed {len(outcomes)} distinct token(s) in column(s) {names}{verified}"
    )
    if _summarize_errors(outcomes, "tokens revealed nothing"):
        raise SystemExit(1)  # as plain `reveal`: a script can tell that something was not revealed


def _verified_first(check: RowCheck | None) -> str:
    """What --verify-rows checked before anything was revealed, for the summary line (walk48, W48-6).

    Said, so an investigator can record it with the case: the output is otherwise the same as without the flag.
    """
    if check is None:
        return ""
    unsigned = f", {check.unsigned} of them unsigned, confirmed" if check.unsigned else ""
    return f"; first verified the {check.rows} row(s) of user_logins holding them against the ETL's signature{unsigned}"


@click.command()
@click.argument("tokens", nargs=-1, required=True)
@click.option("--purpose", "-p", required=True, help="The erasure request's reference. " + PURPOSE_HELP)
@click.option(
    "--user-id",
    "-u",
    "person",
    metavar="ID",
    multiple=True,
    help="The person whose erasure this is: their user_id in user_logins (repeat it for each of their"
    " accounts). The rows of everyone else holding the tokens are counted before anything is erased."
    " Without it, tokens in several people's rows (one token shared, or tokens of different people) are"
    " counted, all of them.",
)
@click.option(
    "--including-other-people",
    "confirmed",
    metavar="N",
    type=click.IntRange(0),
    help="Erase even though other people's rows hold some of the tokens (a shared address or device):"
    " N must be the number of other people the command counts, so a decision taken on other figures is refused.",
)
@click.option(
    "--accepting-unsigned-rows",
    "unsigned_confirmed",
    metavar="N",
    type=click.IntRange(0),
    help="Erase even though N rows of user_logins holding the tokens carry no signature of the ETL (loaded before"
    " migration 0068, or by an ETL that signs nothing): N must be the number the command counts. Check those rows"
    " against a source the database owner does not control first (README, *Privacy officer: erase a person's"
    " values*).",
)
@click.option(
    "--accepting-missing-rows",
    "missing_confirmed",
    metavar="N",
    type=click.IntRange(0),
    help="Erase even though N rows the ETL signed in the same load batches as the rows holding the tokens are no"
    " longer in user_logins as signed (deleted - the data team's retention, or the database owner - or changed"
    " since): N must be the number the command counts. Ask the security team first (`audit login-rows`).",
)
@click.option(
    "--accepting-unverified-rows",
    "unverified_confirmed",
    metavar="N",
    type=click.IntRange(0),
    help="Erase even though N rows of user_logins holding the tokens do not verify against the ETL's signature"
    " (N as counted), once the security team has looked at them (the refusal names their event ids): such a row"
    " is never the person's - each counts as one more other person (--including-other-people).",
)
@click.option(
    "--from-dead-letters",
    is_flag=True,
    help="The tokens are those `python -m etl_service dead-letters erase` named (minted for events it never"
    " loaded; its printed command carries this): the reminder of that step, which this follows, is not printed,"
    " its --user-id USER_ID and --purpose REFERENCE left unfilled are refused (exit 2), and a token the vault"
    " says was erased before counts as done; one it never issued (mistyped, planted) still fails (exit 1).",
)
@click.option(
    "--leaving-out",
    "kept",
    metavar="TOKEN",
    multiple=True,
    help="With --user-id: a token of the person's own rows not to erase, on purpose (a value other people share that"
    " you keep, GDPR art. 17(3); one erased before). The command reads the person's rows itself and refuses while a"
    " row of theirs that verifies holds a token neither given nor left out (attack 50).",
)
@max_rows_option("rows of user_logins holding the tokens, and rows of the person's")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed when not interactive).")
@FORMAT_OPTION
@click.pass_obj
@vault_errors
def erase(
    ctx: Context,
    tokens: tuple[str, ...],
    purpose: str,
    person: tuple[str, ...],
    confirmed: int | None,
    unsigned_confirmed: int | None,
    missing_confirmed: int | None,
    unverified_confirmed: int | None,
    from_dead_letters: bool,
    kept: tuple[str, ...],
    max_rows_checked: int,
    yes: bool,
    fmt: str,
) -> None:
    """Destroy the values behind TOKENS for good (right to erasure; `-` reads tokens from stdin).

    Needs the erase permission (the privacy officer). Detokenize answers NOT_FOUND from then on,
    and the same value tokenized again gets a new token. Audited before and after.

    A token stands for a value, not a person: erasing it takes the value from every row holding
    it, also other people's (a shared address, a family device). The command first counts, in
    user_logins (the analysts' read-only database, as `reveal --query`), the rows and people
    besides the person (--user-id) holding each token, and refuses, erasing nothing, while
    other people's rows hold one - unless you confirm their number with
    --including-other-people N (keeping their values, e.g. for legal claims, GDPR art. 17(3), is
    your call). A count, not a lock: rows loaded meanwhile are counted again after the erasure.

    Those rows are first verified against the ETL's signature (--login-row-keys): a row the database
    owner changed (tokens swapped between people, a user id relabelled) does not verify, and nothing
    is erased (exit 1: report it to the security team). Rows carrying no signature (loaded before
    migration 0068) are erased only with --accepting-unsigned-rows N, N as counted. The load batches
    of those rows are checked whole: a row of theirs copied refuses (exit 1); a row of theirs no
    longer there as signed - deleted by the data team's retention or by the database owner (it may
    have held the tokens for someone the count then misses), or changed since - refuses unless
    --accepting-missing-rows N, N as counted (`audit login-rows` lists those batches).

    Whose a row is, is decided exactly: a row is the person's only when it verifies (or is unsigned
    and confirmed) and its user id is exactly one of --user-id's, whatever the table's collation.
    With --user-id, a token no such row holds is refused, erasing nothing (--from-dead-letters tokens
    excepted); without it, a token no row holds is erased with a note. A row that does not verify is
    named by event id and signed list; once the security team has looked, --accepting-unverified-rows N
    goes on, each such row counted as one more other person (--including-other-people), with or
    without --user-id - even when it is the only row holding the token.

    With --user-id the command also reads the person's rows by user id and refuses while one of theirs
    that verifies holds a token neither given nor named with --leaving-out (attack 50: a row hidden from
    the query that collected the tokens), listing those tokens and the command with them included.

    The vault cannot reach the dead-letter queue: refused events of the person stay there, sealed,
    for 14 days. Next step, run by the DLQ operator: `python -m etl_service dead-letters erase -
    --yes` with the person's user_id=, ip= and device_id= lines on standard input (README).

    \b
    tokenvault --stack .stack --as privacy-officer erase ip_7qwKnwTSu2ecvWSU-DjgMw -u u-118 -p GDPR-118 --yes
    """  # noqa: D301 - \b keeps click from rewrapping the example
    wanted = _from_stdin(tokens)
    if _nothing_given(wanted, "tokens"):
        return
    if from_dead_letters:
        _refuse_unfilled_placeholders(person, purpose)
    _refuse_tokens_given_and_left_out(wanted, kept)
    reach = _count_reach(
        ctx,
        wanted,
        person,
        "nothing was erased",
        verify=True,
        whole_lists=True,
        max_rows=max_rows_checked,
        the_persons_rows=not from_dead_letters,  # attack 50, A50-1: the person's rows read by user id too
        kept=kept,
    )
    _refuse_rows_in_one(ctx, reach.check, unsigned_confirmed, missing_confirmed, unverified_confirmed)
    if reach.unheld and not from_dead_letters:  # attack 47, A47-2: nothing checked of a token no row of theirs holds
        if person:
            refuse_tokens_not_the_persons(reach.unheld, wanted)
        say_tokens_in_no_row(reach.unheld)
    accepted = [
        word
        for option, n in (
            ("--accepting-unsigned-rows", unsigned_confirmed),
            ("--accepting-missing-rows", missing_confirmed),
            ("--accepting-unverified-rows", unverified_confirmed),
        )
        if n is not None
        for word in (option, str(n))
    ]  # the printed command to go on keeps the confirmations the rows' check took
    accepted += [word for token in dict.fromkeys(kept) for word in ("--leaving-out", shlex.quote(token))]
    if reach.persons is not None and (reach.persons.too_many or reach.persons.ungiven):
        refuse_persons_tokens_not_given(reach.persons, wanted, tokens, purpose, person, yes, fmt, _as_given(), accepted)
    reaching = reach.reaching(wanted)
    if confirmed is None and reaching:
        refuse_other_people(reach, wanted, tokens, purpose, yes, fmt, _as_given(), None, from_dead_letters, accepted)
    if confirmed is not None and confirmed != reach.other_people:
        refuse_other_people(
            reach, wanted, tokens, purpose, yes, fmt, _as_given(), confirmed, from_dead_letters, accepted
        )
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("erasure cannot be undone: add --yes to confirm when not running interactively")
        others = f", also for {people_rows(reach.other_people, reach.other_rows, bool(person))}" if reaching else ""
        click.confirm(f"Erase the values behind {len(wanted)} token(s){others}? This cannot be undone", abort=True)
    # The erase limit is not waited out (at 18 an hour a wait is minutes to hours, in silence): it
    # stops the command at once, which lists what it erased and when to send the rest.
    with ctx.client(rate_limit_wait=0.0) as vault:
        try:
            outcomes: list[EraseOutcome] = vault.erase(wanted, purpose)
        except RateLimited as stopped:
            if not stopped.done:
                raise
            done = cast(list[EraseOutcome], stopped.done)
            _say_other_people_erased(ctx, reach, [t for t, o in zip(wanted, done, strict=False) if o is None])
            erase_stopped_partway(wanted, done, stopped, fmt, from_dead_letters, person)
    # A token `dead-letters erase` named that the vault does not hold is usually one the first step erased (the
    # dead-lettered event carried the person's values, one token per value): done, not a failure (attack 38, O2) -
    # only when the vault says its value was erased before; one it never issued (a typo, a plant) fails (A39 P2).
    done_before = [from_dead_letters and erased_before(o) for o in outcomes]
    rows = [
        (t, "erased" if o is None else ALREADY_ERASED if before else str(o))
        for t, o, before in zip(wanted, outcomes, done_before, strict=True)
    ]
    write_rows(["token", "outcome"], rows, Format(fmt))
    _say_other_people_erased(ctx, reach, [t for t, o in zip(wanted, outcomes, strict=True) if o is None])
    if any(o is None for o in outcomes) or any(done_before):
        click.echo(next_step(from_dead_letters), err=True)
    failed = [None if before else o for o, before in zip(outcomes, done_before, strict=True)]
    say_not_issued(outcomes, from_dead_letters)
    if _summarize_errors(failed, "tokens were not erased"):
        raise SystemExit(1)


ERASE_COUNTS = "`erase` counts in user_logins who else holds the tokens before erasing"
REVEAL_READS = "`reveal --verify-rows` verifies the rows of user_logins holding the tokens before revealing"


def _count_reach(
    ctx: Context,
    tokens: Sequence[str],
    person: Sequence[str],
    otherwise: str,
    verify: bool = False,
    why: str = ERASE_COUNTS,
    whole_lists: bool = False,
    exact: bool = False,
    max_rows: int = MAX_ROWS_CHECKED,
    the_persons_rows: bool = False,
    kept: Sequence[str] = (),
) -> Reach:
    """Who else holds `tokens` in user_logins; a Failure ending with `otherwise` when it cannot be counted.

    `verify`: the rows holding them checked against the ETL's signatures too (Reach.check), with the public
    keys of the settings (read only when a row carries a signature). `why`: what the command reads there for.
    `whole_lists`: and every row of the signed lists they name (RowCheck.missing, .copied).
    `exact`: refuse when user_logins' columns do not compare exactly (a nondeterministic collation: A47-1).
    `max_rows`: the most rows verified (--max-rows-checked; past it RowCheck.too_many).
    `the_persons_rows`: with `person`, also the tokens of their own verified rows neither given nor `kept`
    (Reach.persons).
    """
    try:
        dsn = ctx.settings.dsn()
        if ctx.settings.shared_login_warning:  # an older stack: counted with the analysts' login, said once
            click.echo(ctx.settings.shared_login_warning, err=True)
        keys = ctx.settings.row_keys if verify else None
        return count_reach(dsn, tokens, person, keys, whole_lists, exact, max_rows, the_persons_rows, kept)
    except SettingsError as error:
        raise SettingsFailure(f"{error} - {why}; {otherwise}") from None
    except QueryError as error:
        raise Failure(f"{error}; {otherwise}") from None


def _refuse_rows_not_signed(
    ctx: Context,
    check: RowCheck | None,
    unsigned_confirmed: int | None,
    nothing: str = "erasing nothing",
    unverified: tuple[int | None] | None = None,
) -> None:
    """Refuse (`nothing`: what is not done) while a row holding the tokens fails or is unsigned, unconfirmed.

    Attack 41, A41-1: the database owner swapped two people's tokens in user_logins, and the erasure of one
    destroyed the other's values. Counts only in the messages: no user id, no token, no value; the rows that do
    not verify are named by event id and signed list for the security team. Rows signed by a key version the
    public keys file lacks are told apart (walk46, W46-2): after a rotation of the key, refresh it. `unverified`:
    (the rows that do not verify the officer confirmed,) - erase only (attack 47, A47-3: one row planted by the
    ETL's identity blocked a person's erasure, no flag overriding it); None: no such confirmation is offered.
    """
    if check is None:
        return
    if check.too_many:
        raise Failure(too_many_rows(check, nothing))
    stale = _stale_keys_file(ctx, check, nothing, unverified is not None) if check.unknown_key else ""
    confirmed = unverified[0] if unverified else None
    owed = check.unverified()
    if stale and unverified is not None and confirmed == owed + check.unknown_key:
        # Attack 50, A50-2: the ETL's role plants such a list again after each refresh; the officer may count its
        # rows as rows that do not verify (each one more other person), as A47-3's override does.
        stale, owed = "", owed + check.unknown_key
    if check.failing and confirmed != owed:
        audit = login_rows_command(ctx.settings, check.failing_days)  # runs as printed (W47-1)
        raise Failure(failing_rows_refusal(check, confirmed, nothing, unverified is not None, stale, audit))
    if confirmed not in (None, owed) and not stale:
        raise Failure(
            f"--accepting-unverified-rows {confirmed} does not match the count now: no row holding these tokens"
            f" fails to verify; {nothing}. Run it without --accepting-unverified-rows"
        )
    if stale:
        given = "" if confirmed in (None, owed) else f"--accepting-unverified-rows {confirmed} does not match: "
        raise SettingsFailure(given + stale[0].upper() + stale[1:])
    if check.unsigned and unsigned_confirmed != check.unsigned:
        given = (
            ""
            if unsigned_confirmed is None
            else f"--accepting-unsigned-rows {unsigned_confirmed} does not match the count now; "
        )
        cleared = (
            f" {check.cleared} of them the ETL did sign: a signed list lists them as they are, their row_manifest"
            " emptied since - the database owner's doing, which the security team's `audit login-rows` reports."
            if check.cleared
            else ""
        )
        raise Failure(
            f"{given}{check.unsigned} row(s) of user_logins holding these tokens carry no signature of the"
            " ETL (loaded before migration 0068, by an ETL that signs nothing, or cleared since), so whose tokens"
            f" they hold cannot be verified; {nothing}.{cleared} {_check_unsigned(nothing, check.unsigned)}"
        )
    if unsigned_confirmed not in (None, check.unsigned):
        raise Failure(
            f"--accepting-unsigned-rows {unsigned_confirmed} does not match the count now: no row holding these"
            f" tokens is unsigned; {nothing}. Run it without --accepting-unsigned-rows"
        )


def _refuse_rows_in_one(
    ctx: Context,
    check: RowCheck | None,
    unsigned_confirmed: int | None,
    missing_confirmed: int | None,
    unverified_confirmed: int | None,
) -> None:
    """The refusals of erase's rows' check that the officer confirms, said together (walk47, W47-7).

    Unsigned rows and rows missing from their batches were refused one after the other, so the officer learned of
    the second only once the first was confirmed. A refusal of the rows' check (exit 1) is now followed by the
    missing rows' when there are any (a batch's row changed or copied is the security team's matter: not added).
    """
    try:
        _refuse_rows_not_signed(ctx, check, unsigned_confirmed, unverified=(unverified_confirmed,))
    except SettingsFailure:
        raise
    except Failure as refused:
        if check is not None and not check.too_many and not check.copied and not check.changed:
            try:
                _refuse_lists_not_whole(ctx.settings, check, missing_confirmed, unverified_confirmed)
            except Failure as also:
                raise Failure(f"{refused.message}\nBesides: {also.message}") from None
        raise
    _refuse_lists_not_whole(ctx.settings, check, missing_confirmed, unverified_confirmed)


def _check_unsigned(nothing: str, unsigned: int) -> str:
    """What to check before confirming unsigned rows - the officer's check, or the investigator's (W47-22).

    The officer's section of the README sent the officer to the investigator's reveal, whose refusal sent the
    investigator back to the officer's section (walk47, W47-22): each is now told their own part.
    """
    if nothing == "erasing nothing":
        return (
            "Check those rows against a source the database owner does not control: have the fraud investigator"
            f" reveal them (`reveal --query ... --verify-rows --accepting-unsigned-rows {unsigned}`, the case's"
            " purpose) and compare the values with what the request identifies as the person's (README, *Privacy"
            f" officer: erase a person's values*); then run the command again with --accepting-unsigned-rows {unsigned}"
        )
    return (
        f"If the case's evidence, not user_logins, is what you will judge the values by - a row the database owner"
        " changed shows another person's values under this user id - run it again with --accepting-unsigned-rows"
        f" {unsigned} and compare each revealed value with that evidence (for an erasure request: README, *Privacy"
        " officer: erase a person's values*, on rows with no signature)"
    )


def _refuse_lists_not_whole(
    settings: Settings, check: RowCheck | None, missing_confirmed: int | None, unverified_confirmed: int | None = None
) -> None:
    """Refuse while a signed list of the rows' load batches has a row copied, or rows missing unconfirmed.

    Attack 41, A41-1's Left: a row the database owner deleted, or re-pointed away from the tokens, was not read, so
    a value shared with that row's person was erased for them uncounted; a copied row verified as its original.
    The ETL's list says which rows its batch loaded. A row changed or copied has no lawful cause (exit 1, the
    security team's); a row missing may be the data team's retention, so the officer confirms its number, as for
    unsigned rows. Counts only. Rows changed are rows that do not verify: once the security team has looked,
    the officer confirms their number with the others (--accepting-unverified-rows, attack 47, A47-3: the ETL's
    identity can plant a row naming a list of its own).
    """
    if check is None or not check.whole_lists:
        return
    accepted = (check.unverified(), check.unverified() + check.unknown_key)  # A50-2: with those of a version lacking
    changed = 0 if unverified_confirmed is not None and unverified_confirmed in accepted else check.changed
    if check.copied or changed:
        override = (
            f" (rows changed only: once the security team has looked at them, --accepting-unverified-rows"
            f" {check.unverified()} erases anyway)"
            if not check.copied
            else ""
        )
        raise Failure(
            f"{check.copied + changed} row(s) of the load batches of the rows holding these tokens do not"
            " match the ETL's signed list of their batch: changed since it signed them (a row's tokens replaced:"
            " a row holding these tokens made to hold others, and so not read) or copied (a signed row present"
            f" more than once); erasing nothing; report it to the security team{override}"
        )
    if check.missing and missing_confirmed != check.missing:
        security_lists = login_rows_command(settings, check.missing_signed)  # runs as printed, its days (W47-1)
        given = (
            ""
            if missing_confirmed is None
            else f"--accepting-missing-rows {missing_confirmed} does not match the count now; "
        )
        raise Failure(
            f"{given}{check.missing} row(s) the ETL signed in the load batches of the rows holding these tokens"
            f" ({plural(check.lists_missing, 'batch', 'batches')}) are no longer in user_logins as signed: deleted"
            " - by the data team's retention, or by the database owner, when a deleted row may have held these"
            " tokens for another person, whom the count then misses - or changed since; erasing nothing. Ask the"
            f" security team whether they were deleted for retention ({security_lists} lists those batches), then"
            f" run the command again with --accepting-missing-rows {check.missing}"
        )
    if missing_confirmed not in (None, check.missing):
        raise Failure(
            f"--accepting-missing-rows {missing_confirmed} does not match the count now: no row of these load"
            " batches is missing; erasing nothing. Run it without --accepting-missing-rows"
        )


def _stale_keys_file(ctx: Context, check: RowCheck, nothing: str, erase: bool = False) -> str:
    """What to do about rows signed by a key version the public keys file lacks: refresh it (W46-2).

    The refresh is quoted as the security team's, and what to run again after it named (walk47, W47-5: "Refresh
    the file, then run this again: `<the refresh>`" read as "run the refresh again"). `erase`: and the override
    if the refreshed file still lacks it (attack 50, A50-2: the ETL's role plants such a list after each refresh).
    """
    command = "erase" if nothing == "erasing nothing" else "reveal"
    versions = ", ".join(f"v{v}" for v in check.versions_lacking)
    held = ", ".join(f"v{v}" for v in check.versions_held)
    named = rows_named(check.unknown_key_rows)
    return (
        f"{check.unknown_key} row(s) of user_logins holding these tokens are signed with key version {versions} of"
        f" the ETL's row-signing key ({LOGIN_ROWS_KEY}), which the public keys file {ctx.settings.login_row_keys}"
        f" lacks (it holds {held}): the key was rotated after the file was written, so they cannot be verified"
        f" with it; {nothing}. Have the security team refresh the file - {refresh_command(ctx.settings)} - then"
        f" run this {command} again: if no such key version signed them (a list planted: {named}), they are then"
        " rows that do not verify, named for the security team"
        + (
            f". If a refreshed file still lacks it (such a list planted since the refresh), once the security team"
            f" has looked at them, --accepting-unverified-rows {check.unverified() + check.unknown_key} erases anyway,"
            " counting them as rows that do not verify (each one more other person, --including-other-people)"
            if erase
            else ""
        )
    )


def _say_other_people_erased(ctx: Context, before: Reach, erased: list[str]) -> None:
    """After an erasure: how many other people's rows lost a value, counted again (rows loaded meanwhile too)."""
    if not erased:
        return
    try:
        after = count_reach(ctx.settings.dsn(), erased, before.person, ctx.settings.row_keys)  # as decided before
        when = "now"
    except (QueryError, SettingsError) as error:
        after = before
        when = f"as counted before the erasure (counting again failed: {error})"
    say_other_people_erased(before, after, when, erased)


_CONNECTION_FLAGS = (
    ("stack_dir", "--stack"),
    ("role", "--as"),
    ("profile", "--profile"),
    ("profile_file", "--profile-file"),
    ("address", "--address"),
    ("ca", "--ca"),
    ("cert", "--cert"),
    ("key", "--key"),
    ("server_name", "--server-name"),
)
"""The options before the subcommand that say where the vault is and who you are, as `_as_given` repeats them."""


def _as_given() -> str:
    """`tokenvault` with the connection options given on this command line, so the command suggested runs as it is.

    Only those (never an argument of the subcommand: a value given there is what is refused).
    """
    root = click.get_current_context().find_root()
    words = ["tokenvault"]
    for name, flag in _CONNECTION_FLAGS:
        if root.get_parameter_source(name) is ParameterSource.COMMANDLINE:
            words += [flag, shlex.quote(str(root.params[name]))]
    return " ".join(words)


def _stdin_only(arguments: Sequence[str], token_type: str) -> None:
    """Refuse values given as arguments (without repeating them): every local user can read those."""
    if list(arguments) == ["-"]:
        return
    command = _as_given()
    how = (
        "give the values on standard input, one a line, with `-`:\n"
        f"  printf '%s\\n' VALUE ... | {command} tokenize --type {token_type} -\n"
        f"  {command} tokenize --type {token_type} - < values.txt"
    )
    given = sum(1 for argument in arguments if argument != "-")
    if not given:
        raise click.UsageError(how[0].upper() + how[1:])
    raise click.UsageError(
        f"{given} value(s) given on the command line: refused, every local user could read them there"
        " (ps, /proc/PID/cmdline) and your shell keeps them in its history; nothing was sent to the vault."
        f" Instead {how}"
    )


@click.command()
@click.argument("stdin", nargs=-1, metavar="-")
@click.option(
    "--type", "-t", "token_type", type=click.Choice([t.value for t in TokenType]), required=True, help="Kind of value."
)
@FORMAT_OPTION
@click.pass_obj
@vault_errors
def tokenize(ctx: Context, stdin: tuple[str, ...], token_type: str, fmt: str) -> None:
    """Print the token of each value on standard input (`-`: one value a line).

    Values are personal data: they are read from standard input only, never from the command
    line, where every local user could read them (ps, /proc/PID/cmdline). `printf` and `echo` are
    shell builtins, so piping from them puts the value in no process's command line. Needs the
    tokenize permission (the ETL's identity). Equal values get equal tokens.

    \b
    printf '%s\\n' 203.0.113.7 | tokenvault --stack .stack --as etl-service tokenize --type ip -
    tokenvault --stack .stack --as etl-service tokenize --type device_id - < device-ids.txt
    """  # noqa: D301 - \b keeps click from rewrapping the example
    _stdin_only(stdin, token_type)
    wanted = _from_stdin(stdin)
    if _nothing_given(wanted, "values"):
        return
    kind = TokenType(token_type)
    with ctx.client() as vault:
        outcomes = vault.tokenize([(kind, v) for v in wanted])
    rows = [(n + 1, o if isinstance(o, str) else str(o)) for n, o in enumerate(outcomes)]
    write_rows(["#", "token"], rows, Format(fmt))
    if _summarize_errors(outcomes, "values got no token"):
        raise SystemExit(1)


COMMANDS = (reveal, erase, tokenize)
