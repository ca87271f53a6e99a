"""`tokenvault audit verify` and `audit who-saw`: the vault makes the report; the caller's certificate asks.

Verifying the log and finding who saw a token read the whole audit log and the audit keys, so they
run inside the vault service with its own database role and Vault login (tokenvault.v1.AuditReports),
against the vault's own exported checkpoint copy or one you send (`verify --exported FILE`, read
here: the vault reads no file a caller names); you present only a client certificate the vault's
policy gives the report (`audit_reports`: the security team's, `--stack .stack --as security` on
the embedded stack, else --cert/--key or a profile; the privacy officer's for who-saw). The call is
audited naming that certificate. Output and exit codes are those of the service's own command
(`python -m vault_service.admin audit-verify|who-saw`, which stays for the service account and for
a copy over 8 MiB or a log over the vault's bound).
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.text import Text

from tokenvault_cli.context import Context, Failure, SettingsFailure, explain, vault_errors
from tokenvault_cli.output import FORMAT_OPTION, Format, visible, write_rows
from tokenvault_client import AuditVerdict, Unavailable, type_of_token

console = Console(stderr=False)
stderr = Console(stderr=True)

VERIFY_WITHOUT_THE_VAULT = (
    "the vault makes this report, so it cannot while it is down or refuses to start (`make up` says why), or cannot"
    " write its audit log: verify as the service account, without it - `make admin ARGS=audit-verify` on the embedded"
    " stack, `python -m vault_service.admin audit-verify` with the service's settings elsewhere"
)
"""Said after `audit verify`'s UNAVAILABLE: the command that runs where the vault does not (walk 47, W47-3/W47-9)."""

WHO_SAW_COLUMNS = ("record", "when (UTC)", "action", "client", "certificate serial", "purpose", "outcome")
"""who-saw's table columns, for people."""
WHO_SAW_FIELDS = ("record", "at", "action", "client", "client_serial", "purpose", "outcome")
"""The same columns as CSV headers and JSON keys, for programs."""

MAX_COPY_LAG = click.option(
    "--max-copy-lag",
    type=click.FloatRange(0, 86_400),
    default=None,
    metavar="SECONDS",
    help="How much older the vault's exported copy's newest checkpoint may be than the database's before the log"
    " is not verified (exit 1) [default: 5 checkpoint intervals]; raise it only for a known shipping delay"
    " (at most 86400).",
)


MAX_SENT_COPY_BYTES = 8 * 1024 * 1024
"""The largest copy the vault takes with a call (vault_service.service.exported_copy.MAX_SENT_COPY_BYTES)."""


def _no_exported(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """who-saw's `--exported` is refused: the vault verifies against its own copy (verify may send one)."""
    if value is not None:
        raise SettingsFailure(
            "--exported: who-saw verifies against the vault's own exported copy (TOKENVAULT_AUDIT_CHECKPOINT_FILE);"
            " check the shipped copy first with `tokenvault audit verify --exported FILE`"
        )


EXPORTED = click.option("--exported", hidden=True, expose_value=False, callback=_no_exported)


def _sent_copy(ctx: click.Context, param: click.Parameter, value: str | None) -> bytes | None:
    """The text of the copy `--exported FILE` names, read here and sent with the call (the vault reads no file)."""
    if value is None:
        return None
    with open(value, "rb") as copy:
        text = copy.read(MAX_SENT_COPY_BYTES + 1)
    if len(text) > MAX_SENT_COPY_BYTES:
        raise SettingsFailure(
            f"--exported: {value} is over {MAX_SENT_COPY_BYTES // (1024 * 1024)} MiB, the most the vault takes with a"
            " call; send its newest checkpoint lines only (grep 'audit checkpoint' FILE | tail -n 50000 > COPY), or"
            " verify it whole with `python -m vault_service.admin audit-verify --exported FILE` as the service"
        )
    return text


SENT_COPY = click.option(
    "--exported",
    "exported_copy",
    type=click.Path(exists=True, dir_okay=False, readable=True),
    default=None,
    callback=_sent_copy,
    metavar="FILE",
    help="A copy of the vault's exported checkpoints you hold (the shipped log's `audit checkpoint` lines, at most"
    " 8 MiB): read here and sent with the call, and verified against together with the vault's own copy when it"
    " has one, never instead of it (a vault without TOKENVAULT_AUDIT_CHECKPOINT_FILE, as in Kubernetes, has none).",
)


def _print(line: str, to: Console = console) -> None:
    to.print(Text(visible(line)))  # what the vault sends is text, never markup or terminal control


def _shown(verdict: AuditVerdict, to: Console = console) -> AuditVerdict:
    for line in verdict.lines:
        _print(line, to)
    return verdict


@click.group()
def audit() -> None:
    """The audit log, verified by the vault: its hash chain; who saw or erased a token (audited calls).

    `audit login-rows` is not the vault's: this command reads user_logins itself with a read-only database
    login and the row-signing public keys file, and no audit row records it (walk47, W47-16).
    """


@audit.command()
@MAX_COPY_LAG
@SENT_COPY
@click.pass_obj
@vault_errors
def verify(ctx: Context, max_copy_lag: float | None, exported_copy: bytes | None) -> None:
    """Have the vault verify the chain, signed checkpoints and exported copy; exit 1 naming the first row concerned.

    Exit 1 too when the vault's exported copy is refused (no checkpoint, lines that look like checkpoints but cannot
    be read) or is older than the database's newest checkpoint by more than --max-copy-lag. Needs a certificate the
    vault's policy gives `verify` (the security team's: `--as security` on the embedded stack). With --exported FILE,
    the copy you hold is sent and verified against too, beside the vault's own (never instead of it).
    """
    try:
        with ctx.client() as client:
            verdict = _shown(client.audit_verify(max_copy_lag, ctx.settings.deadline, exported_copy))
    except Unavailable as error:
        raise Failure(f"{explain(error, ctx.settings)}. {VERIFY_WITHOUT_THE_VAULT}") from None
    if not verdict.intact:
        raise SystemExit(1)


@audit.command("who-saw")
@click.argument("token")
@click.option(
    "--purpose",
    "-p",
    required=True,
    help="The access request or case this answers, a reference such as DSAR-2026-0042 (no personal data, no token):"
    " kept in the question's audit row.",
)
@MAX_COPY_LAG
@EXPORTED
@FORMAT_OPTION
@click.pass_obj
@vault_errors
def who_saw(ctx: Context, token: str, purpose: str, max_copy_lag: float | None, fmt: str) -> None:
    """Which clients revealed or erased TOKEN, when and why, from the log the vault verified (exit 1 if it does not).

    TOKEN as the request or user_logins gives it, never a value. Needs a certificate the vault's policy gives `who-saw`
    (the security team's, `--as security` on the embedded stack; or the privacy officer's). The table cuts no cell
    short; on a terminal too narrow for it (80 columns) each row is a block of its fields, one a line. With -o csv or
    -o json the rows alone go to standard output, the verdict to standard error.
    """
    if type_of_token(token) is None:  # never sent, never repeated: it may be a value
        raise SettingsFailure(
            "who-saw: the argument is not a token (a type prefix such as ip_ or dev_ and 22 characters): nothing"
            " looked for; copy the token whole from the request you answer or from user_logins, never a value"
        )
    with ctx.client() as client:
        verdict, rows = client.audit_who_saw(token, max_copy_lag, ctx.settings.deadline, purpose)
    output = Format(fmt)
    said = console if output is Format.TABLE else stderr  # for programs, standard output holds the rows alone
    _shown(verdict, said)
    if not verdict.intact and not rows:  # not verified: no rows; a reveal after an erasure: rows, marked, exit 1
        raise SystemExit(1)
    # Every cell whole (the answer to an access request is the time, the client and the purpose): a table of
    # its own cut them to "2026-12-…" and "DEMO-MA…" on an 80-column terminal and in every file or pipe (walk, 6 Dec).
    write_rows(
        WHO_SAW_COLUMNS if output is Format.TABLE else WHO_SAW_FIELDS,
        [(r.record_id, r.at, r.action, r.client, r.client_serial or "-", r.purpose, r.outcome) for r in rows],
        output,
        records_when_narrow=True,  # 7 columns folded into 80 read "detokeniz / e", "fraud-inv / estigator" (W46-11)
    )
    erasures = sum(r.action == "erase" for r in rows)
    questions = sum(r.action == "who-saw" for r in rows)
    asked = f"; asked about {questions} time(s) before (who-saw)" if questions else ""
    _print(f"{len(rows) - erasures - questions} reveal(s) and {erasures} erasure(s) of this token{asked}", said)
    if not verdict.intact:
        raise SystemExit(1)


COMMANDS = (audit,)
