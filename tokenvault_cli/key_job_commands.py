"""`tokenvault reencrypt` and `reindex`: the vault service runs the job; the security team's certificate asks.

The jobs open every stored value, so they run inside the vault service with its own Vault login and
database role (tokenvault.v1.KeyJobs); you present only the security team's client certificate
(`--stack .stack --as security` on the embedded stack, else --cert/--key or a profile), which the
vault's policy must give the job (`key_jobs`). The job's audit rows name that certificate (CN,
serial, SHA-256) and keep `--reason`. Progress is shown as the vault reports it; Ctrl-C ends the
call and the vault starts no further batch of the job (run it again: it resumes).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from tokenvault_cli.context import Context, Failure, vault_errors
from tokenvault_cli.key_commands import REASON, security_client
from tokenvault_cli.progress import stderr
from tokenvault_client import KeyJobProgress

BATCH = click.option(
    "--batch-size",
    type=click.IntRange(100, 100_000),  # the vault's KeyJobs range (attack 26, F4: not one transaction per value)
    default=1000,
    show_default=True,
    help="Rows per transaction (100-100000).",
)
LINE_EVERY_SECONDS = 5.0
"""Outside a terminal, a progress line at most this often per phase (and one at each phase's end)."""


class _Shown:
    """Progress as it comes: bars in a terminal, else a line on stderr now and then."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}
        self._last: tuple[str, float] = ("", 0.0)

    def show(self, update: KeyJobProgress) -> None:
        """One update of the job."""
        if self._progress is not None:
            if update.phase not in self._tasks:
                self._tasks[update.phase] = self._progress.add_task(update.phase, total=update.rows_total or None)
            self._progress.update(self._tasks[update.phase], completed=update.rows_done)
            return
        phase, at = self._last
        if phase != update.phase or time.monotonic() - at >= LINE_EVERY_SECONDS:
            of = f" of {update.rows_total}" if update.rows_total else ""
            stderr.print(f"{update.phase}: {update.rows_done}{of} rows", highlight=False)
            self._last = (update.phase, time.monotonic())


def run_key_job(ctx: Context, job: str, reason: str, batch_size: int) -> None:
    """Have the vault run `job`; show its progress, print its outcome (exit 1 with the vault's reason if refused)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with security_client(ctx) as client:
        if stderr.is_terminal:
            with Progress(*columns, console=stderr) as bars:
                outcome = _followed(client.key_job(job, reason, batch_size), _Shown(bars))
        else:
            outcome = _followed(client.key_job(job, reason, batch_size), _Shown(None))
    if outcome is None:
        raise Failure(f"{job}: the vault ended the call without the job's outcome; run `tokenvault status`")
    click.echo(outcome.outcome)


def _followed(updates: Iterator[KeyJobProgress], shown: _Shown) -> KeyJobProgress | None:
    for update in updates:
        if update.finished:
            return update
        shown.show(update)
    return None


@click.command()
@REASON
@BATCH
@click.pass_obj
@vault_errors
def reencrypt(ctx: Context, reason: str, batch_size: int) -> None:
    """Have the vault move every stored value to the active data key (online, resumable); retire unused keys.

    Runs in the vault service with its own credentials; you present the security team's client certificate
    (`--as security` on the embedded stack). Ctrl-C: the job starts no further batch; run it again to resume.
    """
    run_key_job(ctx, "reencrypt", reason, batch_size)


@click.command()
@REASON
@BATCH
@click.pass_obj
@vault_errors
def reindex(ctx: Context, reason: str, batch_size: int) -> None:
    """Have the vault fingerprint every value under the pending key and make it active (online, resumable).

    Runs in the vault service with its own credentials; you present the security team's client certificate
    (`--as security` on the embedded stack). Ctrl-C: the job starts no further batch; run it again to resume.
    """
    run_key_job(ctx, "reindex", reason, batch_size)


COMMANDS = (reencrypt, reindex)
