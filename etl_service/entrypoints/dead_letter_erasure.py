"""`python -m etl_service dead-letters erase -`: remove an erased person's dead letters.

Part of an erasure (README, *Privacy officer*): `tokenvault erase` destroys the vault's values,
but the DLQ keeps refused messages for 14 days, sealed, and an operator can open them: `show`
would print the erased ip and device id, and `resend` would store them again under new tokens.
The DLQ operator - who may open every dead letter anyway - runs this step with the person's
user id, ips and device ids on standard input (`user_id=…`, `ip=…`, `device_id=…`, one a line,
`#` comments): never on the command line, never logged. A dead letter matches when it holds a
value given anywhere, in any shape and in any spelling the ETL would read as the same value
(nested, in lists, escaped, not JSON; `::ffff:` forms of an ip, a padded device id), never on a
bare substring (etl_service/domain/erasure_match.py). A user id matches under a `user_id` key;
one of 6 characters or more with a letter among them also under any other key (schema drift:
`userId`, `uid`), in NFKC form (fullwidth, zero-width characters), case kept, but never under
`device_type`, `locale` or `app_version`. A letter's event id is matched too (the `event_id`
attribute a producer set): a letter with no kept body can name the person there. A short form
of an ip in an event id - a bare whole number (`evt-3405803783`, `evt-cb007107`: one group, no
dots, colons or `0x`) or 2-3 dotted numbers without `0x` (`evt-203.0.28935`; `build-2.5` is
2.0.0.5) - counts as an ip only on a letter whose body could not be read (none kept -
ETL_DLQ_BODIES=discard, too large - or an envelope not opened: tampered, refused); on a letter
whose body was read (opened, or in clear) the body decides: every group of 8 to 39 digits is some
address and every version or price a short form, so dates, order numbers and versions in other
people's event ids would delete their letters. Full spellings of an ip - four parts, IPv6, or a
`0x` part (`203.0.113.7`, `203_0_113_7`, `0xcb007107`, `203.0.0x7107`) - match on every letter. The
attributes the ETL writes itself (reason, reason detail, source message id, sent time) hold no
value of a body by design and are never matched: they would name everyone.

It reads the whole DLQ, opens each sealed body with the dead-letter key (OpenBao audits each
decrypt), also reads what is in clear (a message SQS's redrive moved as it was, a planted one),
and deletes every dead letter that matches. An envelope sealed inside another (what an older ETL
made of a dead letter moved back to the source queue) is opened again, up to 4 deep, and
an envelope without a reason attribute is opened as well. Without `--yes` it deletes nothing and says what it
would delete. It reports counts only: no value, no message or event id of a matched letter -
but for the tokens below.

A matched letter whose event the vault tokenized before it was dead-lettered (its load lost on its
last receive: attack 35, N9) records those tokens, sealed (`minted_tokens`, service/sealing.py): no
row of user_logins holds them, so the officer's erasure by the person's rows did not reach them.
It opens that record (for matched letters only, dry run or not), prints the tokens and the privacy
officer's `tokenvault erase` command for them (`--user-id USER_ID` and `--purpose REFERENCE` for the
officer to fill from the request: never the user ids given here, which the DLQ operator wrote -
attack 38, M6); a record that does not open, or names more tokens than one event has (forged by
the ETL's identity: attack 38, M5), is named by its letter's message id (exit 3), nothing of it
printed, and its letter is left in the DLQ (review 38, R38-1: deleted, a genuine record was lost
unread). With --yes a letter recording tokens is deleted only after its tokens are printed (flushed); a run
that aborts (OpenBao or SQS lost: exit 1; Ctrl-C: exit 130) prints the tokens it opened and the counts
first, and the letters recording tokens it had not deleted stay for the rerun (attack 38, M3).

It sweeps in pages: a listing reads at most 10,000 letters within its lease, and the sweep checks
them - deleting those that match - and holds the rest while it lists on (a letter it released
would only be listed again), for --wait + 600 s, renewed when half of that is spent, so no letter
it checked comes back while it runs; a letter listed twice anyway is checked and counted once.
It lists again while its listing is cut short, up to 50 times. It never keeps more than 100,000
letters in flight at once (SQS allows a standard queue about 120,000; a drain's take-back and
operators' listings need the rest): over a DLQ holding more, it stops listing at that bound.
If its last listing was cut short or it stopped at its bound, it says some letters may not have
been examined and exits 3, after the counts of what it checked and deleted: a DLQ of more than
100,000 letters is swept whole only once some are settled (`resend`, `redrive`, `delete`).
Dead letters it cannot check are counted and make it exit 3: those another reader holds (an
operator's `list` or `show` holds every dead letter for 60 s) - it waits up to `--wait` seconds
(90) for them to come back and checks them then - and those that arrived while it ran. Run it
again until it exits 0. An envelope naming another Transit key (tampered: the ETL did not write
it) is not opened, as by `show`, so what it holds cannot be checked: it is counted, its message
id printed, and the run exits 3, as for a body that cannot be opened (below). A sealed body
OpenBao refuses to decrypt (garbage or planted ciphertext, a retired key version) or that is
no UTF-8 text does not stop the sweep either: it is counted as could not be opened,
its message id printed (it says nothing of the person: every run lists the same ones), and the
run exits 3; the operator inspects it and removes a plant with `dead-letters delete ID --yes`.
A letter whose matching fails on what a producer put in it is counted as could not be checked,
its message id printed; nothing of it is deleted, the sweep goes on to the next letter, and the
run exits 3.
OpenBao, the token and the dead-letter key are checked before the DLQ is read: a key OpenBao
does not have or will not let the token decrypt with (ETL_DLQ_SEAL_KEY misspelt, another
OpenBao, not the operator's token) stops the run there (exit 2, naming the setting and the key);
every letter would otherwise pass as tampered or unopenable. OpenBao answering so later (the
token revoked or used up during the run) stops the sweep at that letter, also with exit 2, after
the counts of what it checked and deleted until then, and the reason.
Only OpenBao being unreachable, or SQS failing, aborts a run otherwise (exit 1).
What it never reaches: messages still in the source queue (the ETL loads or dead-letters them
within seconds to minutes; run the step after it has caught up) - see docs/threat-model.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.domain.erasure_match import CriteriaError, read_person
from etl_service.entrypoints.dead_letter_erasure_sweep import Sweep, delete_recorded, settle_minted, sweep_dead_letters
from etl_service.entrypoints.dead_letter_layers import MAX_LAYERS
from etl_service.entrypoints.terminal_text import shown
from tokenvault_common.env_file import read_env_file
from tokenvault_common.erase_outcomes import PURPOSE_PLACEHOLDER, USER_ID_PLACEHOLDER

SETTINGS_ERROR = 2
"""Exit code: usage or settings, or OpenBao no longer using the dead-letter key (the dead-letters commands' code)."""
INCOMPLETE = 3
"""Exit code: some dead letters could not be checked (held, arrived meanwhile, tampered, could not be opened,
or their matching failed), or the last listing was cut short."""

MAX_MINTED_TOKENS_PRINTED = 20
"""The most minted tokens one run puts in the officer's line (--max-minted-tokens). One event records at most
2, one person's erasure usually meets 0-2 such events (a load lost on its last receive is rare); 20 is 10 events
of one person tokenized and never loaded - past that it is an incident, or a plant: the ETL's identity seals any
record, and tokens naming no value are NOT_FOUND yet charged to the officer's erase budget (burst 100, 18/hour),
so 100 of them refused the next person's erasure (attack 38, M5b). 20 is a fifth of the burst at most."""


def add_erase_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The `erase` subcommand's arguments."""
    erase = commands.add_parser(
        "erase",
        help="delete an erased person's dead letters (values on stdin: user_id=, ip=, device_id=)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    erase.add_argument("stdin", nargs="*", metavar="-", help="read the person's values from standard input")
    erase.add_argument("--yes", action="store_true", help="delete (without it: only count what would be deleted)")
    erase.add_argument(
        "--wait", type=float, default=90.0, help="seconds to wait for dead letters another reader holds (90)"
    )
    erase.add_argument("--token-file", type=Path, help="the operator's Vault token (default: $VAULT_TOKEN)")
    erase.add_argument(
        "--max-minted-tokens",
        type=_minted_bound,
        default=MAX_MINTED_TOKENS_PRINTED,
        metavar="N",
        help=f"print the officer's line only for at most N minted tokens ({MAX_MINTED_TOKENS_PRINTED}); more:"
        " letters named, none printed, exit 3. Raise it only after looking at those letters",
    )


def _minted_bound(text: str) -> int:
    """--max-minted-tokens's N: a whole number, 0 or more (a negative one refused every record: review 38, R38-2)."""
    try:
        bound = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if bound < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {bound}")
    return bound


def run_erase(
    args: argparse.Namespace,
    dlq: DeadLetterSweep,
    key: str,
    decrypt: Callable[[str], str],
    swept: str = "",
) -> int:
    """Read the person's values from stdin, sweep the DLQ, print counts (then `swept`, naming the queue); the exit code.

    Counts are printed whenever the DLQ was read, also when the sweep stopped part-way (exit 2):
    what it deleted by then is gone, and the operator must know it.
    """
    if list(args.stdin) != ["-"]:
        given = sum(1 for a in args.stdin if a != "-")
        refused = f"; {given} argument(s) refused unread: every local user can read a command line" if given else ""
        print(
            "etl_service dead-letters erase: give the person's values on standard input with `-`, one a line"
            f" (user_id=VALUE, ip=VALUE, device_id=VALUE){refused}",
            file=sys.stderr,
        )
        return SETTINGS_ERROR
    try:
        person = read_person(sys.stdin)
    except CriteriaError as error:
        print(f"etl_service dead-letters erase: stdin {error}; nothing was read from the DLQ", file=sys.stderr)
        return SETTINGS_ERROR
    sweep, printed = Sweep(), False
    bound = getattr(args, "max_minted_tokens", MAX_MINTED_TOKENS_PRINTED)
    try:
        sweep_dead_letters(dlq, person, key, decrypt, delete=args.yes, wait=max(0.0, args.wait), sweep=sweep)
        _report_minted(sweep, bound)
        printed = True
        delete_recorded(sweep, dlq)  # only now: their tokens are out (attack 38, M3)
    except BaseException:  # OpenBao or SQS lost, Ctrl-C: what it gathered is printed, never lost with a letter
        if not printed:
            _report_minted(sweep, bound)
        _report(sweep, deleted=args.yes)
        print(
            "etl_service dead-letters erase: aborted part-way, after the counts above (of what it checked until"
            " then); the tokens printed above are those of the letters it opened; letters recording tokens were"
            " left in the DLQ unless their tokens were printed. Fix the cause and run `dead-letters erase` again",
            file=sys.stderr,
        )
        sys.stdout.flush()
        raise
    _report(sweep, deleted=args.yes)
    if swept:
        print(swept)
    if sweep.stopped:
        print(
            f"etl_service dead-letters erase: stopped part-way, after the counts above: {sweep.stopped}."
            " The rest of the DLQ was not checked: fix this and run `dead-letters erase` again",
            file=sys.stderr,
        )
        return SETTINGS_ERROR
    incomplete = (
        sweep.unchecked
        or sweep.unopenable
        or sweep.matching_failed
        or sweep.tampered
        or sweep.cut_short
        or sweep.minted_unopenable
        or sweep.minted_refused
    )
    return INCOMPLETE if incomplete else 0


FROM_DEAD_LETTERS = "--from-dead-letters"
"""`tokenvault erase`'s flag for tokens this step named: its reminder then does not send the officer back here."""


def officer_tokenvault(environ: Mapping[str, str]) -> str:
    """`tokenvault` with the connection options of the embedded stack this runs in; bare `tokenvault` elsewhere.

    In the stack: its stack.env sourced, as README's DLQ operator block does ($STACK_DIR set), and the
    queue swept that stack's (ETL_QUEUE_URL its SQS_QUEUE_URL). The line printed bare failed there as
    pasted, exit 2 (walk44, W44-3). Elsewhere the officer's own settings are not known here: the line is
    printed bare, with a note of where their options go.
    """
    stack_dir, queue = environ.get("STACK_DIR", ""), environ.get("ETL_QUEUE_URL", "")
    env_file = Path(stack_dir) / "stack.env"
    try:
        ours = bool(stack_dir and queue) and read_env_file(env_file).get("SQS_QUEUE_URL") == queue
    except (OSError, ValueError):
        ours = False
    return f"tokenvault --stack {shlex.quote(stack_dir)} --as privacy-officer" if ours else "tokenvault"


USER_ID = USER_ID_PLACEHOLDER
"""The printed line's `--user-id`: a placeholder the officer replaces with the request's user id(s), as REFERENCE."""


def erase_command(tokens: Sequence[str], tokenvault: str = "tokenvault") -> str:
    """The privacy officer's `tokenvault erase` of `tokens`: `--user-id` the request's person, `--purpose` its ref.

    Both are placeholders the officer fills from the request (USER_ID, REFERENCE), never the DLQ
    operator's `user_id=` lines: E3's count counts other people's rows besides --user-id's, so a
    user id the operator added (a victim's, whose own letter records tokens their rows hold) made
    the count take the victim's rows for the person's, and the line erased their values unrefused
    (attack 38, M6). Nor the user id in a matched letter's body: a letter matched by a value the
    person shares (a NAT address) may be another person's, and its user id would hide that person's
    rows from the count alike. Left as printed, USER_ID is no one's: every row holding a token
    counts as another person's, so the line refuses rather than erase a row's value unasked.
    `tokenvault`: the command and its connection options (officer_tokenvault), already shell-quoted.
    """
    quoted = " ".join(shlex.quote(w) for w in ["erase", *tokens])
    return f"{tokenvault} {quoted} --user-id {USER_ID} --purpose {PURPOSE_PLACEHOLDER} {FROM_DEAD_LETTERS} --yes"


def _report_minted(sweep: Sweep, bound: int = MAX_MINTED_TOKENS_PRINTED) -> None:
    """Name the tokens the matched letters record as minted for their events, and the officer's command erasing them.

    Such a letter's event was tokenized and then not loaded (its load failed on its last receive:
    attack 35, N9): the vault stored the person's values under these tokens and no row of user_logins
    holds them, so the officer's erasure by the person's rows did not reach them. Tokens only, no value.
    Flushed: a letter recording them is deleted only after this (attack 38, M3). Only what `settle_minted`
    keeps (at most `bound` tokens: attack 38, M5b); the letters it refused are named, and those sharing an event id
    with another record (attack 39, P1).
    """
    settle_minted(sweep, bound)
    if sweep.minted:
        print(
            f"tokens the vault minted for these letters' events, which were never loaded (no row of user_logins"
            f" took them, so the erasure by the person's rows did not reach them): {len(sweep.minted)}"
        )
        print(
            "  the privacy officer erases them too (README, Privacy officer), with the request's user id(s) for"
            " USER_ID (`--user-id` repeated per account, as in the first step; never taken from this input) and its"
            " reference for REFERENCE (a token also in other people's rows is counted and refused as always):"
        )
        tokenvault = officer_tokenvault(os.environ)
        print(f"  {erase_command(list(sweep.minted), tokenvault)}")
        if tokenvault == "tokenvault":
            print(
                "  (with the officer's connection options between `tokenvault` and `erase` - `--profile NAME`, or"
                " --address, --ca, --cert, --key and --dsn - unless their TOKENVAULT_* variables or default profile"
                " give them; README, The tokenvault command)"
            )
    if sweep.minted_shared:
        print(
            f"  {len(sweep.minted_shared)} of these letters share an event id with a letter recording other tokens"
            " (the event id is the sender's attribute: a producer's retry tokenized and lost twice, or a letter"
            " planted under a genuine event id - nothing here tells which); every record's tokens are in the line"
            " above, so the genuine ones are erased either way; the officer's run answers NOT_FOUND for strings the"
            f" vault never issued: {', '.join(shown(i) for i in sweep.minted_shared)}"
        )
    if sweep.minted_unopenable:
        print(
            f"tokens minted for their events could not be read: {len(sweep.minted_unopenable)} letter(s) hold a"
            " record of them OpenBao would not open or that names no token (forged, or sealed under a retired key"
            " version), or that names more tokens than one event has (more than one ip or device token: not the"
            " ETL's record: forged by its identity); the vault may still"
            " hold the person's values under tokens no row holds. Left in the DLQ, not deleted: inspect them"
            " (`dead-letters show MESSAGE_ID`); `dead-letters delete MESSAGE_ID --yes --drop-minted-record` removes a"
            " plant (`delete` refuses a letter with a record without that flag, and prints what of it opens), then run"
            " `dead-letters erase` again:"
            f" {', '.join(shown(i) for i in sweep.minted_unopenable)}",
            file=sys.stderr,
        )
    if sweep.minted_refused:
        why = sorted(set(sweep.minted_refused.values()))
        print(
            f"tokens minted for their events not printed: {len(sweep.minted_refused)} letter(s) ({'; '.join(why)});"
            " no officer's line for them. Records are the ETL's, and its identity can seal any: tokens naming no"
            " value are charged to the officer's erase budget all the same (attack 38, M5b). Left in the DLQ, not"
            " deleted: inspect them (`dead-letters show MESSAGE_ID`), then run `dead-letters erase` again with"
            " --max-minted-tokens N if that many may be the person's (a plant's strings come back NOT_FOUND);"
            " `dead-letters delete MESSAGE_ID --yes --drop-minted-record` removes one, printing its tokens first:"
            f" {', '.join(shown(i) for i in sweep.minted_refused)}",
            file=sys.stderr,
        )
    sys.stdout.flush()


def _report(sweep: Sweep, deleted: bool) -> None:
    action = "deleted" if deleted else "would be deleted (dry run: add --yes to delete)"
    print(f"dead letters checked: {sweep.checked}")
    print(f"  holding the person's values, {action}: {sweep.matched - len(sweep.recorded) - len(sweep.left_recording)}")
    if sweep.minted_refused:
        print(
            "  holding the person's values and recording tokens not printed (named below), left in the DLQ:"
            f" {len(sweep.minted_refused)}"
        )
    if unread := set(sweep.minted_unopenable) - set(sweep.minted_refused):
        print(
            "  holding the person's values and a record of tokens that could not be read (named below), left in the"
            f" DLQ: {len(unread)}"
        )
    if sweep.recorded:
        print(
            "  holding the person's values and recording tokens minted for their events, left in the DLQ (not"
            f" deleted: the run stopped first; its rerun names their tokens again): {len(sweep.recorded)}"
        )
    print(f"  {'' if deleted else 'would be '}left untouched: {sweep.checked - sweep.matched}")
    if sweep.no_body:
        print(
            "  of which without a kept body (nothing of it to match but its clear text and attributes):"
            f" {sweep.no_body}"
        )
    if sweep.unopenable:
        print(
            f"could not be opened: {len(sweep.unopenable)} (OpenBao refused the ciphertext, or it is no text: garbage,"
            " planted by someone who may send to the DLQ, or sealed under a retired key version; or envelopes"
            f" sealed inside one another more than {MAX_LAYERS} deep); left in the DLQ,"
            " checked only by their clear text. Inspect them (`dead-letters list`) and remove a plant with"
            " `dead-letters delete MESSAGE_ID --yes`, then run `dead-letters erase` again:"
            f" {', '.join(shown(i) for i in sweep.unopenable)}",
            file=sys.stderr,
        )
    if sweep.matching_failed:
        print(
            f"could not be checked: {len(sweep.matching_failed)} (matching what they hold against the values given"
            " failed, on what a producer put in them; whether they hold the person's values is not known); left in"
            " the DLQ, not deleted. Inspect them (`dead-letters list`, `dead-letters show MESSAGE_ID`) and remove"
            " one holding the person's values with `dead-letters delete MESSAGE_ID --yes`, then run"
            f" `dead-letters erase` again: {', '.join(shown(i) for i in sweep.matching_failed)}",
            file=sys.stderr,
        )
    if sweep.tampered:
        print(
            f"tampered: {len(sweep.tampered)} (an envelope naming a Transit key other than the dead-letter key: the"
            " ETL did not write it; not opened, as by show, so only its clear text was checked); left in"
            " the DLQ. Review them (`dead-letters list` marks them TAMPERED) and remove them with"
            " `dead-letters delete MESSAGE_ID --yes`, then run `dead-letters erase` again:"
            f" {', '.join(shown(i) for i in sweep.tampered)}",
            file=sys.stderr,
        )
    if sweep.unchecked:
        print(
            f"not checked: {sweep.unchecked} (held by another reader: {sweep.held_elsewhere}, arrived meanwhile"
            f" or beyond this run's reach: {sweep.visible_unread}, by SQS's approximate counts); run"
            " `dead-letters erase` again with the same values until it exits 0",
            file=sys.stderr,
        )
    if sweep.cut_short:
        print(
            f"not examined, perhaps: the sweep's last DLQ listing was cut short ({sweep.cut_short}), so some dead"
            " letters may not have been examined - one holding the person's values would still be in the DLQ."
            " Run `dead-letters erase` again with the same values until it exits 0",
            file=sys.stderr,
        )
