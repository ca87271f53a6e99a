"""The sweep of `dead-letters erase`: check every dead letter once, delete those holding the person's values.

It lists the DLQ a page at a time (PAGE_LETTERS), holding what it listed (DeadLetterSweep) for
its --wait plus HOLD_MARGIN_SECONDS, renewed while it lists on, and never more than
MAX_HELD_LETTERS in flight; opens each letter's envelopes as `show` does (dead_letter_layers),
matches its texts and event id (domain/erasure_match.py) and counts what it could not check.
Counts only (Sweep): no value, no id of a matched letter. The command, its arguments, its
exit codes: dead_letter_erasure.py; its report: dead_letter_erasure_report.py.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from etl_service.adapters.dead_letter import DeadLetter
from etl_service.adapters.dead_letter_queue import LISTING_LIMIT
from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.adapters.transit_sealer import DeadLetterKeyUnusable
from etl_service.domain.erasure_match import Person
from etl_service.entrypoints.dead_letter_layers import Layers, Stop, envelope_layers, in_clear, open_minted
from etl_service.entrypoints.terminal_text import shown
from etl_service.service.outcomes import DEPENDENCY_UNAVAILABLE, TOKENIZE_OUTCOME_UNKNOWN

MAX_ROUNDS = 50
"""Listings one sweep makes at most (pages, and its waits for letters other readers hold)."""
PAGE_LETTERS = LISTING_LIMIT
"""The most dead letters one listing of a sweep reads; it checks and holds them before it lists on."""
MAX_HELD_LETTERS = 100_000
"""The most dead letters a sweep keeps in flight at once: SQS allows a standard queue about 120,000,
and a drain's take-back (10,000) and operators' listings need room too. A DLQ holding more than a
sweep can keep is not swept whole in one run (exit 3)."""
HOLD_MARGIN_SECONDS = 600
"""A sweep holds what it lists for its --wait plus this, and renews that hold when half of it is spent."""


@dataclass
class Sweep:
    """Counts of one `dead-letters erase` run (never values or ids)."""

    checked: int = 0
    matched: int = 0
    no_body: int = 0
    visible_unread: int = 0
    held_elsewhere: int = 0
    unopenable: list[str] = field(default_factory=list)
    """Message ids of sealed bodies OpenBao would not open (not values: they say nothing of the person)."""
    matching_failed: list[str] = field(default_factory=list)
    """Message ids of letters whose matching raised (what a producer put in them): could not be checked."""
    tampered: list[str] = field(default_factory=list)
    """Message ids of envelopes naming another Transit key: not opened, so not checked."""
    stopped: str | None = None
    """Why the sweep stopped part-way (OpenBao no longer uses the dead-letter key with this token), or None."""
    minted: dict[str, None] = field(default_factory=dict)
    """The tokens the matched letters record as minted for their events before they were dead-lettered
    (sealing.py, `minted_tokens`), each once in order: no row took them, so the privacy officer erases them
    (attack 35, N9). Tokens, not values."""
    recorded: list[DeadLetter] = field(default_factory=list)
    """Matched letters recording minted tokens, not deleted yet: with --yes such a letter is deleted only
    after the run printed its tokens (`delete_recorded`), so a run that stops part-way - OpenBao or SQS
    lost, Ctrl-C - leaves it in the DLQ for the rerun, never deleted with its tokens unprinted
    (attack 38, M3). Empty once they are deleted."""
    minted_unopenable: list[str] = field(default_factory=list)
    """Message ids of matched letters whose record of minted tokens would not open (forged, a retired key), or is
    no one event's: left in the DLQ (exit 3), never deleted - their tokens, if genuine, are recorded nowhere else."""
    minted_records: dict[str, dict[frozenset[str], list[str]]] = field(default_factory=dict)
    """The opened records by their letter's event id (DeadLetter.event_id): each distinct record, the message ids
    of the letters holding it. One event is tokenized once: its letters (a redelivery dead-lettered twice) record
    the same tokens, named once; two records under one event id are both printed, their letters named
    (`minted_shared`: attack 39, P1)."""
    minted_shared: list[str] = field(default_factory=list)
    """Message ids of matched letters whose event id other letters share with a different record: all their
    tokens are printed (`settle_minted`); named so the operator sees the conflict (a plant, or a retry)."""
    minted_refused: dict[str, str] = field(default_factory=dict)
    """Message ids of matched letters whose recorded tokens are not printed, and why (`settle_minted`): left in
    the DLQ for the operator to inspect (exit 3)."""
    outcome_unknown: list[str] = field(default_factory=list)
    """Message ids of matched letters whose event's Tokenize outcome is unknown (its answer lost on its last receive
    and retried in vain: reason detail TOKENIZE_OUTCOME_UNKNOWN; attack 41, A41-4): the vault may hold the person's
    values under tokens no record names. Left in the DLQ (exit 3): `dead-letters resend` has the ETL tokenize the
    same values again, which returns those tokens and loads them into a row the officer's erasure reaches."""
    cut_short: str | None = None
    """Why its last listing stopped before reading the whole DLQ (DeadLetterQueue.cut_short): letters
    past it may not have been examined. None when the last listing read the DLQ whole."""

    @property
    def left_recording(self) -> set[str]:
        """Message ids of matched letters left in the DLQ for their record of tokens: refused, or not read."""
        return set(self.minted_refused) | set(self.minted_unopenable)

    @property
    def unchecked(self) -> int:
        """Dead letters this run could not look at."""
        return self.visible_unread + self.held_elsewhere


def tokenize_outcome_unknown(dead: DeadLetter) -> bool:
    """Whether the ETL dead-lettered `dead` saying its Tokenize's outcome is unknown (service/batch.py `_tokenize`).

    Read from the letter's attributes, which whoever may send to the DLQ writes: a forged claim only leaves a
    letter in the DLQ with a line saying so, never deletes or prints anything else.
    """
    return dead.reason == DEPENDENCY_UNAVAILABLE and dead.detail.startswith(TOKENIZE_OUTCOME_UNKNOWN)


def sweep_dead_letters(
    dlq: DeadLetterSweep,
    person: Person,
    key: str,
    decrypt: Callable[[str], str],
    delete: bool,
    wait: float,
    sweep: Sweep | None = None,
) -> Sweep:
    """Check every dead letter once, a page at a time; wait up to `wait` s for those other readers hold.

    A round whose listing was cut short (its page, its lease) is followed by another whatever
    SQS's approximate counts say (they lag): the letters it read are held, so the next lists on.
    What it holds stays held (`keep_held` renews it) and never passes MAX_HELD_LETTERS in flight:
    at that bound it stops listing, cut short. A letter listed twice is checked once.
    Stops at the letter OpenBao no longer opens with the dead-letter key (`stopped` says why):
    every later one would fail alike. `sweep` (a new one by default) is filled as it goes, so a
    caller that meets an exception out of it still has what it counted and the tokens it opened.
    A matched letter recording minted tokens is not deleted here (Sweep.recorded).
    """
    sweep = Sweep() if sweep is None else sweep
    seen: set[str] = set()
    deadline = time.monotonic() + wait
    lease = int(wait) + HOLD_MARGIN_SECONDS  # what it holds stays invisible to others until it ends
    for _ in range(MAX_ROUNDS):
        dlq.keep_held(lease)
        room = MAX_HELD_LETTERS - dlq.holding
        if room <= 0:  # at its bound: a letter past it cannot be read without holding one more
            sweep.cut_short = f"it holds {MAX_HELD_LETTERS} letters in flight, as many as a sweep keeps at once"
            break
        letters = dlq.list(min(PAGE_LETTERS, room))
        sweep.cut_short = dlq.cut_short
        dlq.hold(letters, lease)
        try:
            for dead in letters:
                dlq.keep_held(lease)  # earlier pages' letters, while this one is checked
                if dead.message_id not in seen:  # listed again (its hold ran out): checked and counted once
                    seen.add(dead.message_id)
                    _check(dead, sweep, dlq, person, key, decrypt, delete)
        except DeadLetterKeyUnusable as error:
            sweep.stopped = str(error)
            return sweep
        unseen = dlq.unseen()
        sweep.visible_unread, sweep.held_elsewhere = unseen.visible, unseen.held_elsewhere
        if not sweep.unchecked and not sweep.cut_short:
            break
        if not letters:  # nothing new readable now: wait for other readers' leases, if there is time left
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(2.0, left))
    return sweep


def _check(
    dead: DeadLetter,
    sweep: Sweep,
    dlq: DeadLetterSweep,
    person: Person,
    key: str,
    decrypt: Callable[[str], str],
    delete: bool,
) -> None:
    """Match one letter (its clear text, what its envelopes hold, its event id); delete it if it matches.

    A letter whose matching fails (whatever a producer put in it) is counted as could not be
    checked, its message id printed, and the sweep goes on (attack 12, finding 3). Short forms
    of an ip in the event id (whole numbers, 2-3 dotted numbers) are read as addresses only when
    no body was read (erasure_match).
    """
    layers = _opened(dead, sweep, key, decrypt)
    texts = [dead.raw_body, *layers.texts]  # the clear text: a redriven original, a plant
    sweep.checked += 1  # not before: a letter whose opening stopped the sweep was not checked
    event_id = dead.producer_event_id
    body_read = layers.body_read  # the last text read is no envelope: an original (each text read once)
    try:
        named = any(person.matches(text) for text in texts) or (
            event_id is not None and person.matches_event_id(event_id, body_read=body_read)
        )
    except Exception as error:  # no letter stops the sweep; print its type only, never its content
        sweep.matching_failed.append(dead.message_id)
        print(
            f"dead letter {shown(dead.message_id)} could not be checked (matching failed: {type(error).__name__});"
            " left in the DLQ, counted below",
            file=sys.stderr,
        )
        return
    if not named:
        return
    if layers.minted:  # opened before the letter goes: once deleted, nothing else records these tokens
        try:
            minted = open_minted(layers.minted, decrypt)
        except BaseException:  # the sweep stops at this letter (key unusable, OpenBao lost): not checked, as when
            sweep.checked -= 1  # its body's opening stops it - never counted deleted (review 38, R38-5)
            raise
        sweep.matched += 1
        sweep.minted.update(dict.fromkeys(minted.tokens))
        if minted.tokens:
            records = sweep.minted_records.setdefault(dead.event_id, {})
            records.setdefault(frozenset(minted.tokens), []).append(dead.message_id)
        if minted.unopenable:  # left in the DLQ, never deleted with a record no one read (review 38, R38-1)
            sweep.minted_unopenable.append(dead.message_id)
            return
        if delete:  # deleted only once its tokens are printed (delete_recorded): attack 38, M3
            sweep.recorded.append(dead)
        return
    if tokenize_outcome_unknown(dead):  # no record of its tokens, and the vault may hold its values: left
        sweep.outcome_unknown.append(dead.message_id)
        sweep.matched += 1
        return
    if delete:
        dlq.delete(dead)  # SQS lost: the run aborts, this letter not counted deleted
    sweep.matched += 1


def settle_minted(sweep: Sweep, bound: int) -> None:
    """Keep of the opened records (Sweep.minted_records) only what one person's erasure can honestly name.

    The ETL's identity may seal any record and send any letter (attack 38, M5/M5b): 50 planted letters of 2
    token-shaped strings each, matched by the person's user id, named 100 tokens, and the officer's run of the
    printed line spent the erase budget on NOT_FOUND - the next person's erasure refused RESOURCE_EXHAUSTED.
    So: (1) letters of one event id recording the same tokens name them once; letters of one event id recording
    different tokens are all printed - the event id is the sender's attribute, and a conflict under it tells no
    plant from the genuine record (a letter planted under the genuine event id hid the genuine tokens: attack 39,
    P1; a producer's retry under one event id, tokenized and lost twice, records two): their message ids are named
    (`minted_shared`) beside the line, whose run answers NOT_FOUND for a plant's strings;
    (2) if the records name more than `bound` tokens, none is printed and all those letters are refused: a person
    with that many tokenized, never-loaded events is an incident to look at, not a routine line for the officer
    (`--max-minted-tokens` raises the bound once the operator has). Refused letters stay in the DLQ (exit 3).
    Each record names one ip_ and one dev_ token at most (more: `minted_unopenable`, never printed).
    `sweep.minted` becomes the tokens to print; `sweep.recorded` keeps only the letters whose tokens are printed.
    """
    accepted: set[str] = set()
    kept_letters: list[str] = []
    for records in sweep.minted_records.values():
        if len(records) > 1:
            sweep.minted_shared += [m for letters in records.values() for m in letters]
        for tokens, letters in records.items():
            accepted |= tokens
            kept_letters += letters
    kept = {t: None for t in sweep.minted if t in accepted}  # in the order opened
    if len(kept) > bound:
        for message_id in kept_letters:
            sweep.minted_refused[message_id] = f"the letters name {len(kept)} tokens, more than {bound}"
        kept = {}
        sweep.minted_shared = []
    sweep.minted = kept
    sweep.recorded = [d for d in sweep.recorded if d.message_id not in sweep.minted_refused]


def delete_recorded(sweep: Sweep, dlq: DeadLetterSweep) -> None:
    """Delete the matched letters recording minted tokens (Sweep.recorded); call it once their tokens are printed.

    Each leaves `recorded` as it is deleted: an SQS error part-way leaves the rest listed there (and in the DLQ).
    """
    while sweep.recorded:
        dlq.delete(sweep.recorded[0])
        sweep.recorded.pop(0)


def _opened(dead: DeadLetter, sweep: Sweep, key: str, decrypt: Callable[[str], str]) -> Layers:
    """The letter's envelope opened layer by layer (dead_letter_layers, as `show` opens it); counts why it stopped.

    A letter without a reason whose body is an envelope (moved by hand) is opened as well. A
    tampered layer counts as tampered, one OpenBao refuses or one nested deeper than MAX_LAYERS
    as could not be opened; an outer envelope without a body, as without a kept body - told by the
    body (`in_clear`, as `list` tells CLEAR), not by a reason attribute: an original in clear with
    its producer's `reason` had its body read. `in_clear` answers from what the listing read of the
    body: each letter's body is read once.
    """
    layers = envelope_layers(dead, key, decrypt)
    if layers.stop is Stop.TAMPERED:
        sweep.tampered.append(dead.message_id)
    elif layers.stop in (Stop.UNOPENABLE, Stop.TOO_DEEP):
        sweep.unopenable.append(dead.message_id)
    elif layers.stop is Stop.NOT_KEPT and not layers.texts and not in_clear(dead, key):
        sweep.no_body += 1
    return layers
