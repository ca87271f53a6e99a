r"""`python -m etl_service dead-letters list|show|resend|redrive|erase|delete`: the DLQ for an operator.

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
  is, no OpenBao needed. Anyone who may send to the source queue writes bodies: unprintable
  characters (8-bit controls, bidi overrides) are printed as escapes (`\x9b`, `\u202e`) and
  counted on stderr; `--output FILE` writes the original body exactly to a new file (mode 0600),
  e.g. to fix it for `resend --body-file`.
- `resend MESSAGE_ID [--body-file FILE]`: send the fixed body (or, without a file, the original
  one, e.g. after a bug was fixed) back to the source queue under the same event id and sent
  time, and delete the dead letter. A fixed body that still fails validation is refused. The
  sent time goes with the operator's Transit HMAC (`transit/hmac` with the dead-letter key) over
  the dead letter's id, the event id, the time and the body, without which the ETL ignores it
  (anyone who may send to the queue could set it); without the operator's token the copy loads
  under the date it is re-sent. The original of a letter `list` marks CLEAR is its body as it is
  (as for show); only a time and tag it already carries go along with it (its other times are
  its producer's). A letter recording tokens the vault minted for its event (`minted_tokens`) is
  not re-sent unless `--drop-minted-record`: the resend deletes the letter and its record, and an
  event refused again before the vault (event_id_reused, a replay) is dead-lettered with no record,
  its tokens then recorded nowhere; with the flag the tokens are printed first (attack 38, M7).
- `redrive`: take back messages SQS's redrive policy moved (a crash loop): those without a
  reason, and those marked CLEAR by `list`, whatever their attributes; a drain does this by
  itself before it ends, and proves sealed envelopes too, which `redrive` cannot (the operator
  may not rewrap). Each goes back with the SentTimestamp SQS kept on its DLQ copy (the
  original's; never a time an attribute claims) and the operator's Transit HMAC over it, as
  `resend` tags a time, so the event loads under its own date; without the operator's token
  (VAULT_TOKEN, --token-file) under the date it is taken back. It reads at most 10,000
  letters, within one listing lease; when it could not read the DLQ whole it says why (exit 3):
  one unread may be one to take back. A take-back that took some back cannot count held letters
  (its own deletions would pass for another reader's holds), so `redrive` takes back again, up
  to 5 times, until a take-back takes none; that one counts, by SQS's approximate counts taken
  while its listing holds the rest, the dead letters another reader holds (or delayed ones), as
  a drain recounts them. When there are any it says how many (exit 3), as a drain waits for
  them: one held may be one to take back; run it again later. Exit 0 only when nothing is left
  behind; exit 3 too when the fifth still took some back.
- `erase -`: part of an erasure: delete every dead letter holding the person's values, given on
  stdin (`user_id=…`, `ip=…`, `device_id=…`); counts only (etl_service/entrypoints/dead_letter_erasure.py).
- `delete MESSAGE_ID --yes`: remove one dead letter without opening its body, e.g. a planted or
  tampered envelope `erase` could not open; refused without --yes. What it held is gone for good.
  A letter recording tokens the vault minted for its event is not deleted unless
  `--drop-minted-record`, which opens the record (the operator's token) and prints its tokens first,
  as `resend` does: deleted unread, that record was the only one of those tokens (attack 39, P1).

Settings: ETL_QUEUE_URL (ETL_DLQ_URL, ETL_SQS_ENDPOINT_URL, AWS_* as for the service), and for
show/resend/redrive/erase ETL_DLQ_SEAL_VAULT_ADDR or VAULT_ADDR (https://, or http:// to loopback unless
ETL_DLQ_SEAL_VAULT_PLAINTEXT=allow: else exit 2), and ETL_DLQ_SEAL_KEY as the ETL has it. A --token-file
others (or, the operator's own, its group) may read or write, or that another account owns or could replace,
is refused (exit 2, naming the file and `chmod 600`; tokenvault_common.trusted_files.read_token).
Every command first checks the two queues as the ETL does at start (sqs_common.check_queue_pair,
by QueueArn): ETL_DLQ_URL must be the target of ETL_QUEUE_URL's redrive policy, not the source
itself, and have no redrive policy of its own. Otherwise it stops (exit 2, naming both settings
and the queues' ARNs) before any message is read or sent: `resend`/`redrive` would put bodies in
clear into the DLQ or another queue, `erase` would check a queue holding none of the letters and
exit 0, and every `list` of a DLQ redriving elsewhere would move letters out of reach. `erase`
prints the swept queue's QueueArn with its counts.
A dead-letter key OpenBao does not have, or will not let the token decrypt with (the setting
misspelt, another OpenBao, a token that is not the DLQ operator's), stops show/resend/redrive/erase
before they receive any dead letter, as does a plain-http OpenBao address refused as above: every
letter would fail alike, so none is counted as unopenable or reported as tampered for it, and
none is received (each receive counts towards SQS's ApproximateReceiveCount) for nothing.

Exit status: 0 done; 1 SQS or OpenBao failed or refused (a message says which), or the command
could not complete (no such dead letter, a body still refused, its output's reader gone: `| head`);
2 usage or settings (a missing setting, queues that are not a source and its own DLQ, the dead-letter
key as above, values for `erase` not on stdin, `delete` without --yes);
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
import contextlib
import os
import sys
from functools import partial
from pathlib import Path

from etl_service.adapters.dead_letter_queue import DeadLetterError, DeadLetterQueue
from etl_service.adapters.dead_letter_sweep import DeadLetterSweep
from etl_service.adapters.resent_time_tags import tag_resent_times
from etl_service.adapters.sqs import endpoint_for_queue, make_sqs_client
from etl_service.adapters.sqs_common import QueuePair, QueuePairRefused
from etl_service.adapters.transit_sealer import DeadLetterKeyUnusable, check_dead_letter_key
from etl_service.entrypoints.dead_letter_erasure import SETTINGS_ERROR, add_erase_command, run_erase
from etl_service.entrypoints.dead_letter_listing import print_listing
from etl_service.entrypoints.dead_letter_redrive import redrive
from etl_service.entrypoints.dead_letter_single import delete_letter, find_letter, resend_letter, show_letter
from etl_service.entrypoints.dead_letter_vault_access import VaultAccess, dead_letter_key, decrypt, vault_access
from etl_service.entrypoints.terminal_text import shown
from etl_service.errors import EtlError
from tokenvault_common.env import ConfigError

# Each command lives in a module of its own (dead_letter_listing, dead_letter_single, dead_letter_redrive,
# dead_letter_erasure); this one reads the settings, checks the queues and OpenBao first, and hands over.
_redrive = redrive
_vault_access = vault_access
_shown = shown
"""`redrive`, `vault_access` and `shown` under the names they had here before the split (tests call them so)."""


def _add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str
) -> argparse.ArgumentParser:
    """Subcommand `name`; its --help shows its item of this module's docstring and the exit status."""
    doc = __doc__ or ""
    item = doc[doc.index(f"- `{name}") :]
    item = item[: min(i for i in (item.find("\n- `", 1), item.find("\n\n")) if i > 0)]
    return commands.add_parser(
        name,
        help=summary,
        description="\n".join(line.removeprefix("  ") for line in item.removeprefix("- ").splitlines()),
        epilog=doc[doc.index("Exit status:") :].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _parser() -> argparse.ArgumentParser:
    """The commands and their arguments.

    --help shows this module docstring's first paragraph; each command's --help its item of it
    and the exit status.
    """
    parser = argparse.ArgumentParser(prog="etl_service dead-letters", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _add_command(commands, "list", "dead letters with their reasons")
    show = _add_command(commands, "show", "open one sealed body (audited by OpenBao)")
    show.add_argument("message_id")
    show.add_argument("--token-file", type=Path, help="the operator's Vault token (default: $VAULT_TOKEN)")
    show.add_argument(
        "--output", type=Path, help="write the original body exactly to this new file (mode 0600), print nothing of it"
    )
    resend = _add_command(commands, "resend", "send a fixed (or the original) body back to the source queue")
    resend.add_argument("message_id")
    resend.add_argument("--body-file", type=Path, help="the fixed body (default: the original, opened as by show)")
    resend.add_argument("--token-file", type=Path, help="the operator's Vault token (default: $VAULT_TOKEN)")
    resend.add_argument(
        "--drop-minted-record",
        action="store_true",
        help="resend a letter recording tokens the vault minted for its event, dropping that record (its tokens"
        " are printed; without this flag such a letter is not re-sent)",
    )
    redrive_command = _add_command(
        commands, "redrive", "take back messages SQS's redrive moved (no reason, or no ETL envelope)"
    )
    redrive_command.add_argument("--token-file", type=Path, help="the operator's Vault token (default: $VAULT_TOKEN)")
    add_erase_command(commands)
    delete = _add_command(commands, "delete", "remove one dead letter unopened (a plant); needs --yes")
    delete.add_argument("message_id")
    delete.add_argument("--yes", action="store_true", help="really delete (it cannot be undone)")
    delete.add_argument("--token-file", type=Path, help="the operator's Vault token (default: $VAULT_TOKEN)")
    delete.add_argument(
        "--drop-minted-record",
        action="store_true",
        help="delete a letter recording tokens the vault minted for its event, dropping that record (its tokens"
        " are printed first, opened with the operator's token; without this flag such a letter is not deleted)",
    )
    return parser


INTERRUPTED = 130
"""Exit code of a command ended by Ctrl-C (128 + SIGINT, as a shell reports it)."""


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
            f"etl_service dead-letters delete: add --yes to delete {shown(args.message_id)} for good;"
            " nothing was deleted",
            file=sys.stderr,
        )
        return SETTINGS_ERROR
    dlq = DeadLetterSweep(client, queue_url, dlq_url)
    try:
        pair = dlq.check()  # before anything is read or sent: is ETL_DLQ_URL the source's own DLQ?
        access = _checked_vault_access(args)  # before any dead letter is received
        if args.command == "redrive":
            return redrive(dlq, partial(tag_resent_times, *access, dead_letter_key()) if access else None)
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
    except KeyboardInterrupt:  # what the command did is said above it (erase: its counts); no traceback
        print("etl_service dead-letters: interrupted (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # the reader went away (`| head`): no traceback, as `tokenvault` does (walk48, W48-5)
        _stdout_to_devnull()
        if args.command not in QUIET_ON_CLOSED_PIPE:  # a command that changes the DLQ says it stopped (R49-7)
            with contextlib.suppress(OSError):  # `2>&1 | head`: stderr went with it
                print(f"etl_service dead-letters {args.command}: {STOPPED_BY_CLOSED_PIPE}", file=sys.stderr)
        return 1


QUIET_ON_CLOSED_PIPE = frozenset({"list", "show"})
"""The commands that only read: a reader going away (`| head`) ends them without a word."""
STOPPED_BY_CLOSED_PIPE = (
    "stopped part-way: the reader of its output went away; what it did before then stands,"
    " the letters it had not reached are still in the DLQ"
)
"""Said on stderr when a command that changes the DLQ (erase, resend, delete, redrive) loses its output's reader:
silent, `erase ... | head` read as output cut short, not as an erasure stopped half done (review 49, R49-7)."""


def _stdout_to_devnull() -> None:
    """Point standard output at /dev/null, so the interpreter's flush at exit meets no closed pipe either."""
    with contextlib.suppress(OSError, ValueError):  # no file descriptor (a test's capture): no pipe to flush to
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _checked_vault_access(args: argparse.Namespace) -> VaultAccess | None:
    """OpenBao's address and the operator's token for a command that opens bodies, checked before the DLQ is read.

    For show, resend (with --body-file too: it vouches for the original sent time with the
    operator's Transit HMAC), redrive (it vouches so for the time SQS kept on each letter it takes
    back) and erase: the address must be allowed (ConfigError) and OpenBao must let the token
    decrypt with the dead-letter key (DeadLetterKeyUnusable), once per command rather than once per
    letter, and before any letter is received. None for the other commands, and when the address
    or the token is missing: erase stops then (it opens every body); show/resend stop only if the
    letter's body is sealed (one SQS's redrive moved is in clear); resend --body-file sends the
    fixed body, and redrive what it takes back, without vouching for its time.
    """
    if args.command not in ("show", "resend", "redrive", "erase") and not getattr(args, "drop_minted_record", False):
        return None
    access = vault_access(args.token_file)
    if access is None:
        if args.command == "erase":
            raise ConfigError(  # a missing setting: exit 2
                "erase opens bodies: it needs VAULT_ADDR and the operator's token (VAULT_TOKEN, --token-file)"
            )
        return None
    check_dead_letter_key(*access, dead_letter_key())
    return access


def _erase(args: argparse.Namespace, dlq: DeadLetterSweep, pair: QueuePair, access: VaultAccess | None) -> int:
    """`erase`: bodies opened as by `show` (the dead-letter key only; tampered ones never).

    OpenBao, the token and the key were checked before the DLQ is read (_checked_vault_access),
    rather than after the first deletions: a key it cannot use would otherwise pass every letter
    as tampered or unopenable. The summary names the queue swept by its QueueArn, so a count of 0
    can be told from a wrong queue.
    """
    key = dead_letter_key()
    swept = f"dead-letter queue swept: {pair.dlq_arn} (ETL_DLQ_URL; the redrive target of {pair.source_arn})"
    return run_erase(args, dlq, key, lambda ciphertext: decrypt(ciphertext, access, key), swept)


def _run(args: argparse.Namespace, dlq: DeadLetterQueue, access: VaultAccess | None) -> int:
    """`list`, or `show`/`delete`/`resend` of the letter `args.message_id` names, over one listing of `dlq`."""
    letters = dlq.list()
    key = dead_letter_key()
    if args.command == "list":
        return print_listing(dlq, letters, key)
    dead = find_letter(dlq, letters, args.message_id)
    if args.command == "show":
        return show_letter(dead, access, key, getattr(args, "output", None))
    if args.command == "delete" and isinstance(dlq, DeadLetterSweep):
        return delete_letter(dlq, dead, access, key, getattr(args, "drop_minted_record", False))
    return resend_letter(dlq, dead, args.body_file, access, key, getattr(args, "drop_minted_record", False))
