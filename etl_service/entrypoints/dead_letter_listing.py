"""`dead-letters list`: every dead letter with its reason, detail, event id, sent time and what its body is."""

from __future__ import annotations

import sys

from etl_service.adapters.dead_letter import DeadLetter
from etl_service.adapters.dead_letter_queue import LISTING_LIMIT, DeadLetterQueue
from etl_service.adapters.transit_sealer import KEY_SETTING
from etl_service.domain.messages import MAX_EVENT_ID_LENGTH
from etl_service.entrypoints.dead_letter_erasure import INCOMPLETE
from etl_service.entrypoints.dead_letter_layers import in_clear, is_tampered
from etl_service.entrypoints.terminal_text import shown


def print_listing(dlq: DeadLetterQueue, letters: list[DeadLetter], key: str) -> int:
    """Print `letters` (as `dlq` listed them) one a line, then the tampered ones; the exit code.

    The body column says TAMPERED (sealed under a key other than `key`), CLEAR (no envelope the
    ETL writes, told by the body), `sealed`, or `-` (not kept). Exit INCOMPLETE when the listing
    was cut short (`listed_whole`), else 0.
    """
    event_ids = [_event_id_shown(d.event_id) for d in letters]
    width = max([24, *map(len, event_ids)])
    print(f"{'message id':36}  {'reason':22}  {'event id':{width}}  {'sent (UTC)':25}  body      detail")
    for d, event_id in zip(letters, event_ids, strict=True):
        kept = (
            "TAMPERED"
            if is_tampered(d, key)
            else "CLEAR"  # by its body: a `reason` attribute is any producer's to set (attack 12, finding 2)
            if in_clear(d, key)
            else "sealed"
            if d.sealed_body
            else "-"
        )
        reason = d.reason or "(none: redrive)"
        print(
            f"{shown(d.message_id):36}  {shown(reason):22}  {event_id:{width}}  {d.sent_at:25}"
            f"  {kept:8}  {shown(d.detail)}"
        )
    print(f"{len(letters)} dead letter(s)")
    tampered = [d.message_id for d in letters if is_tampered(d, key)]
    if tampered:
        print(
            f"{len(tampered)} tampered dead letter(s): their envelope names a Transit key other than {key!r},"
            f" so the ETL did not write them; show/resend refuse them: {', '.join(tampered)}",
            file=sys.stderr,
        )
    if tampered and not any(d.sealed_body and not is_tampered(d, key) for d in letters):
        print(
            f"no sealed dead letter names {key!r}: check {KEY_SETTING} first - it must be the key the ETL seals"
            " with (show/resend/erase stop when OpenBao cannot use it)",
            file=sys.stderr,
        )
    return listed_whole(dlq, len(letters))


def _event_id_shown(event_id: str) -> str:
    """The event id whole (ids of one source often share a long prefix), up to the ETL's own bound.

    Any id the ETL accepts fits (MAX_EVENT_ID_LENGTH); a longer one, which only a DLQ writer
    could set, is cut with a marker rather than widen every line.
    """
    text = shown(event_id)
    return text if len(text) <= MAX_EVENT_ID_LENGTH else text[: MAX_EVENT_ID_LENGTH - 1] + "…"


def listed_whole(dlq: DeadLetterQueue, listed: int) -> int:
    """`list`'s exit code: 0, or INCOMPLETE saying so when its listing was cut short (more letters may exist)."""
    if dlq.cut_short is None:
        return 0
    print(
        f"etl_service dead-letters list: the listing was cut short ({dlq.cut_short}), so the {listed} dead"
        " letter(s) above may not be the whole DLQ. Nothing was changed: the rest stay in the DLQ. Run it again;"
        f" a DLQ of more than {LISTING_LIMIT} letters is listed whole only once some are settled"
        " (resend, redrive, delete)",
        file=sys.stderr,
    )
    return INCOMPLETE
