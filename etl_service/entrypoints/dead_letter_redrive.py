"""`dead-letters redrive`: take back the messages SQS's redrive policy moved into the DLQ (a crash loop)."""

from __future__ import annotations

import sys

from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.adapters.take_back_times import TakeBackTagger
from etl_service.entrypoints.dead_letter_erasure import INCOMPLETE

REDRIVE_PASSES = 5
"""Take-backs one `redrive` runs at most, one after another until one takes none back (and counts held letters)."""


def redrive(dlq: DeadLetterSweep, tagger: TakeBackTagger | None = None) -> int:
    """Take back what SQS's redrive moved; exit 3 (saying why) when letters may be left it could not take back.

    With `tagger` (the operator's Transit HMAC, dead-letter key: resent_time_tags.tag_resent_times)
    each goes back with the SentTimestamp SQS kept on its DLQ copy - the original's: the redrive
    keeps it - tagged as `resend` tags a time (take_back_times), so it loads under its own date;
    without, under the date it is taken back (said on stderr). A letter carrying a tag keeps it.

    Take-backs follow one another until one takes none back (at most REDRIVE_PASSES): that one
    counts the letters another reader holds, or delayed ones, while its listing holds the rest
    (TakeBack.held_elsewhere, as a drain recounts them, service/drain_check.py); unread, so
    perhaps ones to take back. A take-back that moved letters cannot count them itself: its own
    deletions would pass for another reader's holds. Exit 0 only when the last take-back read the
    DLQ whole, took none back and counted none held elsewhere.

    Every letter without a reason, or whose body is not shaped as an envelope the ETL writes,
    whatever its attributes. Sealed envelopes stay unproven: the DLQ operator's OpenBao policy
    allows decrypt, not the rewrap that proves a ciphertext without opening it, so an envelope
    forged in the ETL's exact shape stays too; a drain of the sealing ETL proves and takes it
    back (service/own_dead_letters.py).
    """
    taken = 0
    for _ in range(REDRIVE_PASSES):
        # No prover, no sealer: no crash loop.
        moved, complete, held_elsewhere, _ = dlq.take_back_redriven(tagger=tagger)
        taken += moved
        if not moved or not complete:
            break
    print(f"taken back: {taken}")
    if taken and tagger is None:
        print(
            "etl_service dead-letters redrive: without the operator's token (VAULT_TOKEN, --token-file) the"
            " original sent times were not vouched for: an event taken back without a tag of its own loads under"
            " today's date",
            file=sys.stderr,
        )
    if not complete:
        print(
            f"etl_service dead-letters redrive: the DLQ was not read whole ({dlq.cut_short}): a letter left unread"
            " may be one to take back. Nothing is lost: it stays in the DLQ; run it again",
            file=sys.stderr,
        )
    elif moved:
        print(
            f"etl_service dead-letters redrive: its last of {REDRIVE_PASSES} take-backs still took letters back"
            " (more keep arriving in the DLQ: a crash loop?), so what is left was not counted. Nothing is lost:"
            " run it again once the ETL settles",
            file=sys.stderr,
        )
    if held_elsewhere:  # counted only by a take-back that took none (TakeBack.held_elsewhere), as a drain's
        lag = " (they can lag the letters it just took back by a minute)" if taken else ""
        print(
            f"etl_service dead-letters redrive: {held_elsewhere} dead letter(s) held by another reader or delayed,"
            f" by SQS's approximate counts{lag}, were not read: one may be one to take back. Nothing is lost: they"
            " stay in the DLQ; run it again later (a listing holds its letters for 60 s, an `erase` sweep for its"
            " --wait + 600 s)",
            file=sys.stderr,
        )
    return 0 if complete and not moved and not held_elsewhere else INCOMPLETE
