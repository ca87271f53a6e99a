"""`dead-letters show`, `resend` and `delete`: one dead letter, found by its message id in a listing.

`show` and `resend` open its body layer by layer as `erase` does (dead_letter_layers), with the
dead-letter key and no other; a body in clear (a message SQS's redrive moved as it was) is the
original as it is. `delete` removes it unopened.
"""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path

from etl_service.adapters.dead_letter import DeadLetter
from etl_service.adapters.dead_letter_queue import DeadLetterError, DeadLetterQueue
from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.adapters.resent_time_tags import tag_resent_time
from etl_service.adapters.transit_sealer import KEY_SETTING
from etl_service.domain.validation import Rejection, parse_login_event
from etl_service.entrypoints.dead_letter_layers import (
    MAX_LAYERS,
    Layers,
    MintedTokens,
    Stop,
    envelope_layers,
    in_clear,
    open_minted,
    outer_record,
)
from etl_service.entrypoints.dead_letter_vault_access import VaultAccess, decrypt
from etl_service.entrypoints.terminal_text import escaped, shown
from etl_service.errors import EtlError
from tokenvault_common.env import ConfigError


def find_letter(dlq: DeadLetterQueue, letters: list[DeadLetter], message_id: str) -> DeadLetter:
    """The letter of `letters` (as `dlq` listed them) with `message_id`; DeadLetterError when there is none.

    When the listing was cut short, the error says the letter may be in the DLQ past it.
    """
    dead = next((d for d in letters if d.message_id == message_id), None)
    if dead is None and dlq.cut_short:
        raise DeadLetterError(
            f"dead letter {shown(message_id)} is not among the {len(letters)} listed, but the listing was cut"
            f" short ({dlq.cut_short}): it may be in the DLQ past them. Nothing was changed; run it again"
        )
    if dead is None:
        raise DeadLetterError(f"no dead letter {shown(message_id)} in the DLQ")
    return dead


def show_letter(dead: DeadLetter, access: VaultAccess | None, key: str, output: Path | None = None) -> int:
    """Print what each layer of `dead` held to stdout (PII: never logged); DeadLetterError when one was not opened.

    Unprintable characters (a producer's 8-bit controls, bidi overrides) are printed as escapes,
    lines kept (terminal_text.escaped), and counted on stderr. With `output`, the original body is
    written to that new file exactly as it was (mode 0600: it holds PII), for an operator to fix
    and send back with `resend --body-file`; nothing of it is printed.
    """
    layers = opened_layers(dead, access, key)
    if output is not None:
        if layers.stop is not None:
            raise DeadLetterError(why_not_opened(dead, layers, key))
        _write_new_private_file(output, layers.texts[-1])
        print(f"wrote the original body of dead letter {shown(dead.message_id)} to {output} (mode 0600)")
        _say_minted(layers, access, key)
        return 0
    for depth, text in enumerate(layers.texts):
        if depth:
            print(
                f"dead-letters show: what layer {depth} held is itself a dead-letter envelope (sealed again by"
                f" an older ETL after a DLQ redrive); layer {depth + 1}, opened:",
                file=sys.stderr,
            )
        printable, count = escaped(text)
        print(printable)
        if count:
            print(
                f"dead-letters show: {count} unprintable character(s) printed as escapes (\\x9b, \\u202e);"
                " --output FILE writes the body exactly",
                file=sys.stderr,
            )
    _say_minted(layers, access, key)
    if layers.stop is not None:
        raise DeadLetterError(why_not_opened(dead, layers, key))
    return 0


def _say_minted(layers: Layers, access: VaultAccess | None, key: str) -> None:
    """On stderr, the tokens the letter records as minted for its event before it was dead-lettered (attack 35, N9)."""
    if not layers.minted:
        return
    minted = open_minted(layers.minted, lambda ciphertext: decrypt(ciphertext, access, key))
    if minted.tokens:
        print(
            "dead-letters show: the vault minted these tokens for this event before it was dead-lettered; no row"
            " of user_logins holds them unless the event was loaded since (a `resend`). An erasure of the person"
            " reaches them only by them (`dead-letters erase` names them): " + " ".join(minted.tokens),
            file=sys.stderr,
        )
    if minted.unopenable:
        print(
            "dead-letters show: its record of tokens minted for the event would not open, or names no token",
            file=sys.stderr,
        )


def _write_new_private_file(path: Path, text: str) -> None:
    """Write `text` to `path`, a file that must not exist yet (no symlink followed, none clobbered), mode 0600."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise DeadLetterError(f"{path} exists: --output writes a new file only; nothing was written") from None
    except OSError as error:
        raise DeadLetterError(f"cannot create {path}: {error.strerror}; nothing was written") from None
    with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as file:
        file.write(text)


def delete_letter(
    dlq: DeadLetterSweep, dead: DeadLetter, access: VaultAccess | None = None, key: str = "", drop_record: bool = False
) -> int:
    """Delete `dead` with its body unopened (a plant, a tampered envelope) and say so.

    A letter recording tokens the vault minted for its event (its envelope's `minted_tokens`; a tampered envelope's
    is no record of the ETL's, `outer_record`) is refused unless
    `drop_record`, as `resend` refuses one (attack 38, M7): deleted, its record was the only one of those tokens,
    and no erasure reached them - `dead-letters erase` sent the operator to `delete` a plant under a genuine event
    id, and the genuine letter went unread (attack 39, P1). With `drop_record` the record is opened (the
    operator's token) and its tokens printed first; one that cannot be opened for want of the token or OpenBao
    is not dropped.
    """
    if record := outer_record(dead, key):  # a tampered envelope's is no record of the ETL's: deleted unopened
        _drops_record(dead, [record], access, key, drop_record, "deleted", "delete")
    dlq.delete(dead)
    print(f"deleted dead letter {shown(dead.message_id)} ({shown(dead.reason or 'no reason')}, unopened)")
    return 0


def resend_letter(
    dlq: DeadLetterQueue,
    dead: DeadLetter,
    body_file: Path | None,
    access: VaultAccess | None,
    key: str,
    drop_record: bool = False,
) -> int:
    """Send `body_file`'s body, or else `dead`'s original, back to the source queue; refused while still invalid.

    The original sent time of a letter the ETL sealed goes along with the operator's Transit HMAC
    over it, the event id and the body, so the ETL believes it (domain/resent_times.py); without
    the operator's token it is not vouched for and the copy loads under today's date (said on
    stderr). A CLEAR letter's time comes from its producer's attributes: only a tag it already
    carries, with its body unchanged, goes along.

    A letter recording tokens the vault minted for its event (`minted_tokens`, any layer) is refused
    unless `drop_record`: the resend deletes it and the record with it, and the re-sent event
    refused again before the vault (event_id_reused: its id is loaded; a replay; a stricter check)
    is dead-lettered with no record - its tokens recorded nowhere, out of every erasure's reach
    (attack 38, M7). With `drop_record` the tokens are printed (stdout) before it is re-sent, for
    the operator to keep with the letter's event id. (Carrying the record over to the re-sent
    message would need the ETL to copy it into a new letter: not done.)
    """
    # the original's layers (opened as below, all records), or with a fixed body the letter's own record
    recorded = opened_layers(dead, access, key).minted if body_file is None else (outer_record(dead, key) or "",)
    if any(recorded):
        _drops_record(dead, [r for r in recorded if r], access, key, drop_record, "re-sent", "resend")
    body = body_file.read_text() if body_file else original_body(dead, access, key)
    try:
        parse_login_event(body)
    except Rejection as rejection:
        raise DeadLetterError(
            f"the body is still refused ({rejection.reason}: {rejection.detail}); not re-sent"
        ) from None
    tag = None
    if not in_clear(dead, key) and access is not None:
        tag = partial(tag_resent_time, *access, key)
    elif not in_clear(dead, key):
        print(
            "dead-letters resend: without the operator's token (VAULT_TOKEN, --token-file) the original sent time"
            " is not vouched for: the event loads under the date it is re-sent",
            file=sys.stderr,
        )
    print(f"re-sent as message {dlq.resend(dead, body, tag)} (event id {shown(dead.event_id)})")
    return 0


_LOSES = {
    "resend": "a resend deletes that record, and if the event is refused again before the vault (event_id_reused,"
    " a replay) no letter records them and no erasure reaches them",
    "delete": "deleted, no letter records them and no erasure reaches them (a letter under the same event id"
    " recording other tokens may be the plant, or this one: `dead-letters erase` prints both records)",
}


def _drops_record(
    dead: DeadLetter, sealed: list[str], access: VaultAccess | None, key: str, drop: bool, done: str, verb: str
) -> None:
    """Refuse (DeadLetterError) to `verb` a letter recording minted tokens unless `drop`; with it, print them first."""
    try:
        minted: MintedTokens | None = open_minted(sealed, lambda ciphertext: decrypt(ciphertext, access, key))
    except (ConfigError, EtlError) as error:  # no operator's token, OpenBao unreachable: the record is said, not named
        if drop:  # never dropped unread: its tokens would be recorded nowhere (review 38, R38-3)
            raise DeadLetterError(
                f"dead letter {shown(dead.message_id)} records tokens the vault minted for its event, and its record"
                f" could not be opened to print them ({error}); not {done}. --drop-minted-record drops a record only"
                " once its tokens are printed: run it again with the operator's token (VAULT_TOKEN, --token-file)"
            ) from None
        minted = None
    if not drop:
        raise DeadLetterError(
            f"dead letter {shown(dead.message_id)} records tokens the vault minted for its event"
            f" ({len(minted.tokens) if minted else 'not opened'}); {_LOSES[verb]}. Not {done}: `dead-letters show`"
            f" names them; add --drop-minted-record to {verb} it anyway (the tokens are printed first, to keep with"
            " its event id and hand to the privacy officer if the letter is the person's)"
        )
    named = " ".join(minted.tokens) if minted and minted.tokens else "(the record would not open)"
    print(
        f"dead letter {shown(dead.message_id)} (event id {shown(dead.event_id)}): dropping its record of tokens the"
        f" vault minted for its event: {named}"
    )
    sys.stdout.flush()


def opened_layers(dead: DeadLetter, access: VaultAccess | None, key: str) -> Layers:
    """`dead`'s body opened layer by layer as `erase` opens it (dead_letter_layers), with `key` and no other.

    A message SQS's redrive moved as it was was never sealed: its body is the original, told by
    the body as `list` marks it CLEAR (`in_clear`), whatever reason attribute its producer gave it.
    `access` was checked with the key before the DLQ was read (dead_letters._checked_vault_access),
    so an envelope naming another key is the letter's doing, not a wrong setting.
    """
    if in_clear(dead, key):
        return Layers([dead.raw_body], None, dead)
    return envelope_layers(dead, key, lambda ciphertext: decrypt(ciphertext, access, key))


def original_body(dead: DeadLetter, access: VaultAccess | None, key: str) -> str:
    """The original body (for resend); DeadLetterError saying why when it was not reached."""
    layers = opened_layers(dead, access, key)
    if layers.stop is not None:
        raise DeadLetterError(why_not_opened(dead, layers, key))
    return layers.texts[-1]


def why_not_opened(dead: DeadLetter, layers: Layers, key: str) -> str:
    """Why show/resend did not reach `dead`'s original body (erase counts the same stops)."""
    where = f"dead letter {shown(dead.message_id)}"
    if layers.depth:
        where = f"layer {layers.depth + 1} of {where} (what layer {layers.depth} held)"
    if layers.stop is Stop.TAMPERED:
        return (
            f"{where} names Transit key {layers.layer.key!r}, not the dead-letter key {key!r} ({KEY_SETTING}): the"
            " ETL did not write it, someone who may send to the DLQ did - treat it as tampering (keep it as"
            " evidence; find the sender in the queue's access logs). Not opened: none of it was sent to OpenBao"
        )
    if layers.stop is Stop.TOO_DEEP:
        return f"{where} is an envelope nested deeper than {MAX_LAYERS}: not opened"
    if layers.stop is Stop.UNOPENABLE:
        return f"{where}: {layers.refusal}"
    return f"the body of {where} was not kept ({shown(layers.layer.note or 'no note')})"
