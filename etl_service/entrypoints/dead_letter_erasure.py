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
A matched letter the ETL dead-lettered saying its event's Tokenize outcome is unknown (its answer lost on
its last receive, retried in vain: attack 41, A41-4) records no tokens, yet the vault may hold the person's
values under tokens nothing names: it is left in the DLQ, its message id printed with what to do (`resend`
it: the ETL's Tokenize of the same values returns those tokens and loads them into a row the officer then
erases), and the run exits 3. The DLQ operator is not given Tokenize to find them itself: tokenizing is the
ETL's right alone (a value-to-token oracle for anyone else, docs/threat-model.md).
What it never reaches: messages still in the source queue (the ETL loads or dead-letters them
within seconds to minutes; run the step after it has caught up) - see docs/threat-model.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.domain.erasure_match import CriteriaError, read_person
from etl_service.entrypoints.dead_letter_erasure_report import report, report_minted
from etl_service.entrypoints.dead_letter_erasure_sweep import Sweep, delete_recorded, sweep_dead_letters

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
        report_minted(sweep, bound)
        printed = True
        delete_recorded(sweep, dlq)  # only now: their tokens are out (attack 38, M3)
    except BaseException:  # OpenBao or SQS lost, Ctrl-C: what it gathered is printed, never lost with a letter
        if not printed:
            report_minted(sweep, bound)
        report(sweep, deleted=args.yes)
        print(
            "etl_service dead-letters erase: aborted part-way, after the counts above (of what it checked until"
            " then); the tokens printed above are those of the letters it opened; letters recording tokens were"
            " left in the DLQ unless their tokens were printed. Fix the cause and run `dead-letters erase` again",
            file=sys.stderr,
        )
        sys.stdout.flush()
        raise
    report(sweep, deleted=args.yes)
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
        or sweep.outcome_unknown
    )
    return INCOMPLETE if incomplete else 0
