"""`python -m etl_service dead-letters list|show|resend|redrive|erase|delete`: the DLQ for an operator.

- `list`: every dead letter with its reason, detail, event id and sent time (no body: sealed).
  Its body column says `sealed`, `-` (not kept), `TAMPERED` (sealed under another key), or
  `CLEAR` for a body that is no envelope the ETL writes - an original SQS's redrive moved, its
  values in clear, whatever reason attribute its producer gave it. It reads at most 10,000
  letters, within one listing lease, as `redrive` does; when it could not list the DLQ whole it
  says why (exit 3).
- `show MESSAGE_ID`: open one sealed body with the operator's Vault token (VAULT_TOKEN or
  --token-file); OpenBao's audit device records the decrypt. The body holds PII: it is printed
  to stdout only, never logged. Bodies are opened only with the dead-letter key
  (ETL_DLQ_SEAL_KEY, default tokenvault-dead-letters), never with the key an envelope names:
  anyone who may send to the DLQ writes envelopes, and one naming another key (the vault's KEK,
  say) would have an operator's broader token decrypt what that key protects. Such an envelope
  is refused and reported as tampered (`list` marks it TAMPERED). When what it opened is itself an
  envelope (sealed twice by an older ETL), it says so and opens that too, as `erase` does
  (dead_letter_layers): up to 4 deep, then it says the next is nested deeper: not opened (exit 1).
  A body `list` marks CLEAR (no envelope the ETL writes: told by the body, as `list`, `redrive`
  and a drain tell it, whatever reason attribute its producer set) is the original: printed as it
  is, no OpenBao needed.
- `resend MESSAGE_ID [--body-file FILE]`: send the fixed body (or, without a file, the original
  one, e.g. after a bug was fixed) back to the source queue under the same event id and sent
  time, and delete the dead letter. A fixed body that still fails validation is refused. The
  original of a letter `list` marks CLEAR is its body as it is (as for show).
- `redrive`: take back messages SQS's redrive policy moved (a crash loop): those without a
  reason, and those marked CLEAR by `list`, whatever their attributes; a drain does this by
  itself before it ends, and proves sealed envelopes too, which `redrive` cannot (the operator
  may not rewrap). It reads at most 10,000 letters, within one listing lease; when it could not
  read the DLQ whole it says why (exit 3): one unread may be one to take back. A take-back that
  took some back cannot count held letters (its own deletions would pass for another reader's
  holds), so `redrive` takes back again, up to 5 times, until a take-back takes none; that one
  counts, by SQS's approximate counts taken while its listing holds the rest, the dead letters
  another reader holds (or delayed ones), as a drain recounts them. When there are any it says
  how many (exit 3), as a drain waits for them: one held may be one to take back; run it again
  later. Exit 0 only when nothing is left behind; exit 3 too when the fifth still took some back.
- `erase -`: part of an erasure: delete every dead letter holding the person's values, given on
  stdin (`user_id=…`, `ip=…`, `device_id=…`); counts only (etl_service/entrypoints/dead_letter_erasure.py).
- `delete MESSAGE_ID --yes`: remove one dead letter without opening it, e.g. a planted or
  tampered envelope `erase` could not open; refused without --yes. What it held is gone for good.

Settings: ETL_QUEUE_URL (ETL_DLQ_URL, ETL_SQS_ENDPOINT_URL, AWS_* as for the service), and for
show/resend/erase ETL_DLQ_SEAL_VAULT_ADDR or VAULT_ADDR (https://, or http:// to loopback unless
ETL_DLQ_SEAL_VAULT_PLAINTEXT=allow: else exit 2), and ETL_DLQ_SEAL_KEY as the ETL has it.
Every command first checks the two queues as the ETL does at start (sqs_common.check_queue_pair,
by QueueArn): ETL_DLQ_URL must be the target of ETL_QUEUE_URL's redrive policy, not the source
itself, and have no redrive policy of its own. Otherwise it stops (exit 2, naming both settings
and the queues' ARNs) before any message is read or sent: `resend`/`redrive` would put bodies in
clear into the DLQ or another queue, `erase` would check a queue holding none of the letters and
exit 0, and every `list` of a DLQ redriving elsewhere would move letters out of reach. `erase`
prints the swept queue's QueueArn with its counts.
A dead-letter key OpenBao does not have, or will not let the token decrypt with (the setting
misspelt, another OpenBao, a token that is not the DLQ operator's), stops show/resend/erase
before they receive any dead letter, as does a plain-http OpenBao address refused as above: every
letter would fail alike, so none is counted as unopenable or reported as tampered for it, and
none is received (each receive counts towards SQS's ApproximateReceiveCount) for nothing.

Exit status: 0 done; 1 SQS or OpenBao failed or refused (a message says which), or the command
could not complete (no such dead letter, a body still refused); 2 usage or settings (a missing
setting, queues that are not a source and its own DLQ, the dead-letter key as above, values for
`erase` not on stdin, `delete` without --yes);
3 `erase`: some dead letters could not be checked: held elsewhere, arrived meanwhile, tampered,
could not be opened, or their matching failed (their message ids are printed; run it again), or
its last listing was cut short (some may not have been examined); `redrive` and `list`: the DLQ
could not be read whole (the listing was cut short - 10,000 letters read, its lease out, a letter
listed twice: nothing lost or changed, the rest stay in the DLQ); `redrive` also: another reader
held dead letters (or some were delayed) when its last take-back counted, whether or not it took
some back before, or its fifth take-back still took some back (nothing lost: run it again later).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from etl_service.adapters.dead_letter_queue import LISTING_LIMIT, DeadLetter, DeadLetterError, DeadLetterQueue
from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.adapters.sqs import endpoint_for_queue, make_sqs_client
from etl_service.adapters.sqs_common import QueuePair, QueuePairRefused
from etl_service.adapters.transit_sealer import (
    DEAD_LETTER_KEY,
    KEY_SETTING,
    DeadLetterKeyUnusable,
    check_dead_letter_key,
    open_sealed,
)
from etl_service.domain.validation import Rejection, parse_login_event
from etl_service.entrypoints.dead_letter_erasure import INCOMPLETE, SETTINGS_ERROR, add_erase_command, run_erase
from etl_service.entrypoints.dead_letter_layers import (
    MAX_LAYERS,
    Layers,
    Stop,
    envelope_layers,
    in_clear,
    is_tampered,
)
from etl_service.errors import EtlError
from tokenvault_common.env import ConfigError
from tokenvault_common.vault_address import plaintext_setting, vault_address_problem

REDRIVE_PASSES = 5
"""Take-backs one `redrive` runs at most, one after another until one takes none back (and counts held letters)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etl_service dead-letters", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="dead letters with their reasons")
    show = commands.add_parser("show", help="open one sealed body (audited by OpenBao)")
    show.add_argument("message_id")
    show.add_argument("--token-file", type=Path, help="the operator's Vault token (default: $VAULT_TOKEN)")
    resend = commands.add_parser("resend", help="send a fixed (or the original) body back to the source queue")
    resend.add_argument("message_id")
    resend.add_argument("--body-file", type=Path, help="the fixed body (default: the original, opened as by show)")
    resend.add_argument("--token-file", type=Path, help="the operator's Vault token (default: $VAULT_TOKEN)")
    commands.add_parser("redrive", help="take back messages SQS's redrive moved (no reason, or no ETL envelope)")
    add_erase_command(commands)
    delete = commands.add_parser("delete", help="remove one dead letter unopened (a plant); needs --yes")
    delete.add_argument("message_id")
    delete.add_argument("--yes", action="store_true", help="really delete (it cannot be undone)")
    return parser


def main(argv: list[str]) -> int:
    """Run one operator command; exit 1 with a message when it cannot."""
    args = _parser().parse_args(argv)
    queue_url = os.environ.get("ETL_QUEUE_URL", "")
    if not queue_url:
        print("ETL_QUEUE_URL is required", file=sys.stderr)
        return SETTINGS_ERROR
    dlq_url = os.environ.get("ETL_DLQ_URL") or f"{queue_url}-dlq"
    client = make_sqs_client(
        os.environ.get("ETL_SQS_ENDPOINT_URL") or endpoint_for_queue(queue_url),
        os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        os.environ.get("AWS_ACCESS_KEY_ID"),
        os.environ.get("AWS_SECRET_ACCESS_KEY"),
    )
    if args.command == "delete" and not args.yes:
        print(
            f"etl_service dead-letters delete: add --yes to delete {_shown(args.message_id)} for good;"
            " nothing was deleted",
            file=sys.stderr,
        )
        return SETTINGS_ERROR
    dlq = DeadLetterSweep(client, queue_url, dlq_url)
    try:
        pair = dlq.check()  # before anything is read or sent: is ETL_DLQ_URL the source's own DLQ?
        if args.command == "redrive":
            return _redrive(dlq)
        access = _checked_vault_access(args)  # before any dead letter is received
        try:
            if args.command == "erase":
                return _erase(args, dlq, pair, access)
            return _run(args, dlq, access)
        finally:
            dlq.release()
    except QueuePairRefused as error:
        print(f"etl_service dead-letters: stopped, no message read or sent: {error}", file=sys.stderr)
        return SETTINGS_ERROR
    except (DeadLetterKeyUnusable, ConfigError) as error:
        print(f"etl_service dead-letters: stopped: {error}", file=sys.stderr)
        return SETTINGS_ERROR
    except (DeadLetterError, EtlError) as error:
        print(f"etl_service dead-letters: {error}", file=sys.stderr)
        return 1


def _shown(text: str) -> str:
    """`text` fit for a terminal line, unprintable characters shown as `?`.

    Attributes are written by anyone who may send to the DLQ: line breaks or escape sequences
    must not forge lines or drive the operator's terminal.
    """
    return "".join(c if c.isprintable() else "?" for c in text)


def _dead_letter_key() -> str:
    """The Transit key the ETL seals with (ETL_DLQ_SEAL_KEY): the only key bodies are opened with."""
    return os.environ.get("ETL_DLQ_SEAL_KEY") or DEAD_LETTER_KEY


def _checked_vault_access(args: argparse.Namespace) -> tuple[str, str] | None:
    """OpenBao's address and the operator's token for a command that opens bodies, checked before the DLQ is read.

    For show, resend without --body-file, and erase: the address must be allowed (ConfigError) and
    OpenBao must let the token decrypt with the dead-letter key (DeadLetterKeyUnusable), once per
    command rather than once per letter, and before any letter is received. None for the other
    commands, and when the address or the token is missing: erase stops then (it opens every body);
    show/resend stop only if the letter's body is sealed (one SQS's redrive moved is in clear).
    """
    if args.command not in ("show", "resend", "erase") or getattr(args, "body_file", None):
        return None
    access = _vault_access(args.token_file)
    if access is None:
        if args.command == "erase":
            raise DeadLetterError(
                "erase opens bodies: it needs VAULT_ADDR and the operator's token (VAULT_TOKEN, --token-file)"
            )
        return None
    check_dead_letter_key(*access, _dead_letter_key())
    return access


def _erase(args: argparse.Namespace, dlq: DeadLetterSweep, pair: QueuePair, access: tuple[str, str] | None) -> int:
    """`erase`: bodies opened as by `show` (the dead-letter key only; tampered ones never).

    OpenBao, the token and the key were checked before the DLQ is read (_checked_vault_access),
    rather than after the first deletions: a key it cannot use would otherwise pass every letter
    as tampered or unopenable. The summary names the queue swept by its QueueArn, so a count of 0
    can be told from a wrong queue.
    """
    key = _dead_letter_key()
    swept = f"dead-letter queue swept: {pair.dlq_arn} (ETL_DLQ_URL; the redrive target of {pair.source_arn})"
    return run_erase(args, dlq, key, lambda ciphertext: _decrypt(ciphertext, access, key), swept)


def _redrive(dlq: DeadLetterSweep) -> int:
    """Take back what SQS's redrive moved; exit 3 (saying why) when letters may be left it could not take back.

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
        moved, complete, held_elsewhere = dlq.take_back_redriven()  # no prover: the operator may not rewrap
        taken += moved
        if not moved or not complete:
            break
    print(f"taken back: {taken}")
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


def _listed_whole(dlq: DeadLetterQueue, listed: int) -> int:
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


def _run(args: argparse.Namespace, dlq: DeadLetterQueue, access: tuple[str, str] | None) -> int:
    letters = dlq.list()
    key = _dead_letter_key()
    if args.command == "list":
        print(f"{'message id':36}  {'reason':22}  {'event id':24}  {'sent (UTC)':25}  body      detail")
        for d in letters:
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
                f"{_shown(d.message_id):36}  {_shown(reason):22}  {_shown(d.event_id[:24]):24}  {d.sent_at:25}"
                f"  {kept:8}  {_shown(d.detail)}"
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
        return _listed_whole(dlq, len(letters))
    dead = next((d for d in letters if d.message_id == args.message_id), None)
    if dead is None and dlq.cut_short:
        raise DeadLetterError(
            f"dead letter {_shown(args.message_id)} is not among the {len(letters)} listed, but the listing was cut"
            f" short ({dlq.cut_short}): it may be in the DLQ past them. Nothing was changed; run it again"
        )
    if dead is None:
        raise DeadLetterError(f"no dead letter {_shown(args.message_id)} in the DLQ")
    if args.command == "show":
        layers = _layers(dead, access, key)
        for depth, text in enumerate(layers.texts):
            if depth:
                print(
                    f"dead-letters show: what layer {depth} held is itself a dead-letter envelope (sealed again by"
                    f" an older ETL after a DLQ redrive); layer {depth + 1}, opened:",
                    file=sys.stderr,
                )
            print(text)
        if layers.stop is not None:
            raise DeadLetterError(_not_opened(dead, layers, key))
        return 0
    if args.command == "delete" and isinstance(dlq, DeadLetterSweep):
        dlq.delete(dead)
        print(f"deleted dead letter {_shown(dead.message_id)} ({_shown(dead.reason or 'no reason')}, unopened)")
        return 0
    body = args.body_file.read_text() if args.body_file else _original(dead, access, key)
    try:
        parse_login_event(body)
    except Rejection as rejection:
        raise DeadLetterError(
            f"the body is still refused ({rejection.reason}: {rejection.detail}); not re-sent"
        ) from None
    print(f"re-sent as message {dlq.resend(dead, body)} (event id {dead.event_id})")
    return 0


def _layers(dead: DeadLetter, access: tuple[str, str] | None, key: str) -> Layers:
    """`dead`'s body opened layer by layer as `erase` opens it (dead_letter_layers), with `key` and no other.

    A message SQS's redrive moved as it was was never sealed: its body is the original, told by
    the body as `list` marks it CLEAR (`in_clear`), whatever reason attribute its producer gave it.
    `access` was checked with the key before the DLQ was read (_checked_vault_access), so an
    envelope naming another key is the letter's doing, not a wrong setting.
    """
    if in_clear(dead, key):
        return Layers([dead.raw_body], None, dead)
    return envelope_layers(dead, key, lambda ciphertext: _decrypt(ciphertext, access, key))


def _original(dead: DeadLetter, access: tuple[str, str] | None, key: str) -> str:
    """The original body (for resend); DeadLetterError saying why when it was not reached."""
    layers = _layers(dead, access, key)
    if layers.stop is not None:
        raise DeadLetterError(_not_opened(dead, layers, key))
    return layers.texts[-1]


def _decrypt(ciphertext: str, access: tuple[str, str] | None, key: str) -> str:
    """One sealed layer opened with the dead-letter key as the operator (OpenBao audits it)."""
    if access is None:
        raise DeadLetterError("opening a body needs VAULT_ADDR and the operator's token (VAULT_TOKEN or --token-file)")
    return open_sealed(*access, key, ciphertext)


def _not_opened(dead: DeadLetter, layers: Layers, key: str) -> str:
    """Why show/resend did not reach `dead`'s original body (erase counts the same stops)."""
    where = f"dead letter {_shown(dead.message_id)}"
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
    return f"the body of {where} was not kept ({_shown(layers.layer.note or 'no note')})"


def _vault_access(token_file: Path | None) -> tuple[str, str] | None:
    """OpenBao's address and the operator's token (--token-file, else VAULT_TOKEN); None when either is missing."""
    setting = "ETL_DLQ_SEAL_VAULT_ADDR" if os.environ.get("ETL_DLQ_SEAL_VAULT_ADDR") else "VAULT_ADDR"
    address = os.environ.get(setting)
    allow = plaintext_setting("ETL_DLQ_SEAL_VAULT_ADDR")  # one opt-in, whichever address is read
    if address and (problem := vault_address_problem(setting, address, allow, os.environ.get(allow) or None)):
        raise ConfigError(problem)  # the operator's token and the bodies in clear would travel over it
    try:
        token = token_file.read_text().strip() if token_file else os.environ.get("VAULT_TOKEN", "")
    except OSError as error:
        raise DeadLetterError(f"cannot read --token-file: {error.strerror}") from None
    return (address, token) if address and token else None
