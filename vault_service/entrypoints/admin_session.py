"""One admin command's session: its key operations on the record, from its intent row to its exit.

The security team's commands run in a process the operator controls, so the audit round at its
exit (attack 17, finding 4) alone anchors nothing an operator colluding with the database owner
does not want anchored: they end the process once its work is done and the owner's ghost view
keeps its rows out of the chain (review 18, R18-2). So, in this order:

- each key operation writes its intent row ("started", the ticket) and then runs one upkeep round
  over it, BEFORE its work: the work starts only once the chain holds that row and a checkpoint
  of a head past it is exported (`require_anchored`); else the command is refused, nothing done.
  A SIGKILL after the work leaves the intent row anchored: who started which job under which ticket;
- SIGTERM and SIGHUP (`kill`, a Job deadline, a closed SSH or `kubectl exec` session) are raised
  as Ctrl-C is (`Stopped`), so the exit round still runs and names the ids it could not anchor;
- the exit round runs whether the work succeeded, failed or was interrupted, and its outcome is
  reported in each case (R18-1), not only when the work succeeded.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from rich.console import Console

from vault_service.adapters.operator_identity import OperatorIdentity
from vault_service.bootstrap import Bootstrapped, bootstrap, job_liveness
from vault_service.config import VaultServiceConfig
from vault_service.service.own_rows_round import OwnRowsNotAnchored, OwnRowsRound, WorkRefused, require_anchored
from vault_service.service.rotation import KeyRotation

console = Console(stderr=False)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread as Ctrl-C is, so the command's audit round still runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise `Stopped` instead of ending the process where it stands.

    Only the main thread may set handlers (a command run from another thread keeps the defaults);
    the previous handlers are put back on leaving.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signum)

    before = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def exit_status(stop: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a process the signal ended (130 for Ctrl-C)."""
    return 128 + (stop.signum if isinstance(stop, Stopped) else signal.SIGINT)


@contextmanager
def administration(config: VaultServiceConfig, operator: OperatorIdentity) -> Iterator[KeyRotation]:
    """The key operations on the service's Vault and database access, audited as `operator`.

    Each operation's intent row is anchored before its work (WorkRefused, nothing done, when it
    cannot be). On leaving, one audit upkeep round checks the rows appended since against the
    chain, and signs and exports its head; OwnRowsNotAnchored when a row is missing or the round
    fails. When the operations raised (or were stopped by a signal), the round runs too, its
    outcome is printed on standard error when the rows are not anchored, and their error leaves.
    """
    wired: Bootstrapped = bootstrap(config)
    liveness = job_liveness(config)  # each operation's intent row held while it runs (attack 26, F5)

    def intent_on_record() -> None:
        require_anchored(lambda: anchor_own_rows(wired, config, "intent row(s)"))

    try:
        try:
            yield wired.rotation(operator.actor, intent_on_record, liveness)
        except WorkRefused:
            raise  # its round has just named the rows; no work was done
        except BaseException:
            outcome = anchor_own_rows(wired, config)
            if not outcome.anchored:
                print(
                    f"vault admin: {OwnRowsNotAnchored(outcome, 'the command did not run to its end')}",
                    file=sys.stderr,
                )
            raise
        outcome = anchor_own_rows(wired, config)
        if not outcome.anchored:
            raise OwnRowsNotAnchored(outcome)
    finally:
        liveness.release()
        wired.close()


def anchor_own_rows(wired: Bootstrapped, config: VaultServiceConfig, rows: str = "audit row(s)") -> OwnRowsRound:
    """Run the round over this command's audit rows; say what it found when they are anchored."""
    outcome = wired.anchor_own_rows(config.audit_checkpoint_file)
    if outcome.anchored and outcome.rows:
        ids = f"{outcome.rows[0]} to {outcome.rows[-1]}" if len(outcome.rows) > 1 else str(outcome.rows[0])
        heads = ", ".join(f"row {c.head.head_id}" for c in outcome.exported)
        signed = f"checkpoint of {heads} signed and exported" if heads else "covered by the vault's signed checkpoint"
        console.print(f"audit: this command's {len(outcome.rows)} {rows} (ids {ids}) are in the chain; {signed}")
    return outcome
