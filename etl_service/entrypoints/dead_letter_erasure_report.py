"""What `dead-letters erase` prints: its counts, and the privacy officer's line for the tokens its letters record.

Counts only, and message ids of letters it could not check or left; never a value, nor a matched letter's id but
for those recording tokens. The command and its exit codes: dead_letter_erasure.py; the sweep: its _sweep module.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from etl_service.entrypoints.dead_letter_erasure_sweep import Sweep, settle_minted
from etl_service.entrypoints.dead_letter_layers import MAX_LAYERS
from etl_service.entrypoints.terminal_text import shown
from tokenvault_common.env_file import read_env_file
from tokenvault_common.erase_outcomes import PURPOSE_PLACEHOLDER, USER_ID_PLACEHOLDER

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


def report_minted(sweep: Sweep, bound: int) -> None:
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
    if sweep.outcome_unknown:
        print(
            f"tokenize outcome unknown: {len(sweep.outcome_unknown)} letter(s) of the person whose event's Tokenize"
            " answer was lost on its last receive (the ETL retried it in vain): the vault may hold the person's ip"
            " and device id under tokens no row and no letter names, which the officer's erasure by the person's"
            " rows did not reach. Left in the DLQ, not deleted: `dead-letters resend MESSAGE_ID` each once the ETL"
            " runs (its Tokenize of the same values returns those tokens, or new ones for values already erased, and"
            " loads them into a row), then the privacy officer erases that row's tokens as in the first step, and"
            f" `dead-letters erase` runs again: {', '.join(shown(i) for i in sweep.outcome_unknown)}",
            file=sys.stderr,
        )
    sys.stdout.flush()


def report(sweep: Sweep, deleted: bool) -> None:
    """The run's counts (stdout) and the letters it could not check or left, by message id (stderr)."""
    action = "deleted" if deleted else "would be deleted (dry run: add --yes to delete)"
    print(f"dead letters checked: {sweep.checked}")
    left = len(sweep.recorded) + len(sweep.left_recording) + len(sweep.outcome_unknown)  # matched, not deleted
    print(f"  holding the person's values, {action}: {sweep.matched - left}")
    if sweep.outcome_unknown:  # not deleted: counted apart, as the count is kept with the request (walk46, W46-3)
        print(
            "  holding the person's values, tokenize outcome unknown (named below), left in the DLQ:"
            f" {len(sweep.outcome_unknown)}"
        )
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
