"""One checkpoint round over the audit rows a short-lived process appended, before it exits (attack 17, finding 4).

The security team's commands (`python -m vault_service.admin` rewrap, rotate-*, reencrypt, reindex)
append their audit rows through the same `PostgresAuditLog.append` as the service, which remembers
each one, but their process ran no audit upkeep: the rows were never checked against the chain,
and round 15's ghost view kept them out of it (who ran `reencrypt` under which ticket) with
audit-verify saying intact. So before such a process exits it runs the upkeep's own round once
(`AuditUpkeep.run_once_watched`, not a second implementation; its statements under the
service's statement timeout and the round under its watchdog, so a round the database owner
holds fails the command instead of holding it for ever): the chain up to the head must hold each
of its rows, the head is signed, stored and exported, and rows it does not hold are named in the
exported checkpoint under a signature of their own, as the service does. The outcome says which
rows were checked, which are missing, and why the round failed if it did: the command then
exits non-zero naming the ids.

A round at the exit alone is in the hands of whoever can end the process (review 18, R18-2): an
operator colluding with the database owner kills it (SIGKILL, a closed session) once its work is
done, and no round ever sees its rows. So the commands also run the round right after their intent
row ("started", with the ticket), BEFORE their work (`require_anchored`): the work starts only
once a round has checked that row in the chain and a checkpoint of a head holding it is exported;
otherwise the command is refused with nothing changed. A kill after the work then still leaves an
anchored record of who started which job under which ticket; only its outcome row can be lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vault_service.domain.anchoring import AppendedRows
from vault_service.domain.checkpoints import Checkpoint
from vault_service.domain.errors import AuditUnavailable
from vault_service.service.audit_upkeep import AuditUpkeep


@dataclass(frozen=True)
class OwnRowsRound:
    """What the last round found for the rows this process appended."""

    rows: tuple[int, ...]
    """The ids of the rows this process appended that the round was to check (ascending)."""
    missing: tuple[int, ...] = ()
    """Those the chain up to the head does not hold (named in the exported checkpoint)."""
    exported: tuple[Checkpoint, ...] = ()
    """The checkpoints the round exported (a genuine stored checkpoint of the head it checked is exported again)."""
    failure: str | None = None
    """Why the round did not run to its end (its rows then unchecked), None when it did."""
    unexported: tuple[int, ...] = ()
    """Those the round checked but left remembered: no checkpoint of a head holding them was exported."""

    @property
    def anchored(self) -> bool:
        """Whether every row was found in the chain by a round that ran to its end."""
        return self.failure is None and not self.missing and not self.unexported


class OwnRowsNotAnchored(AuditUnavailable):
    """The audit rows of this command are missing from the chain, or could not be checked: the command fails."""

    def __init__(self, outcome: OwnRowsRound, done: str = "the command's work is done") -> None:
        super().__init__(self._said(done, _why(outcome)))
        self.outcome = outcome

    @staticmethod
    def _said(done: str, why: str) -> str:
        return f"{done}, but {why}"


class WorkRefused(OwnRowsNotAnchored):
    """The command's intent row is not anchored: its work was not started (review 18, R18-2)."""

    def __init__(self, outcome: OwnRowsRound) -> None:
        super().__init__(outcome, "refused before doing anything (no key or value was changed)")

    @staticmethod
    def _said(done: str, why: str) -> str:
        return f"{done}: {why}"


def _why(outcome: OwnRowsRound) -> str:
    """Which of the rows are not anchored, and why."""
    if outcome.missing:
        ids = ", ".join(str(i) for i in outcome.missing)
        return (
            f"its audit rows {ids} are not in the audit chain (written elsewhere than vault.audit_log, changed or"
            " removed): they are named in the exported checkpoint; report it to the security team and run"
            " `tokenvault audit verify --exported <copy>`"
        )
    if outcome.failure is None:
        ids = ", ".join(str(i) for i in outcome.unexported)
        return (
            f"its audit rows {ids} are in the audit chain, but no checkpoint holding them could be exported"
            " (see the log); check the checkpoint file's disk and run `tokenvault audit verify --exported <copy>`"
        )
    ids = ", ".join(str(i) for i in outcome.rows)
    return (
        f"its audit rows {ids} could not be checked against the audit chain ({outcome.failure}); check that"
        " these ids are in vault.audit_log and run `tokenvault audit verify`"
    )


def require_anchored(anchor: Callable[[], OwnRowsRound]) -> OwnRowsRound:
    """Run `anchor` (the round over this process's rows, its intent row among them); WorkRefused unless anchored.

    Called between a command's intent row and its work: the work runs only on the record.
    """
    outcome = anchor()
    if not outcome.anchored:
        raise WorkRefused(outcome)
    return outcome


def anchor_own_rows(
    appended: AppendedRows, upkeep_exporting_to: Callable[[Callable[[Checkpoint], None]], AuditUpkeep]
) -> OwnRowsRound:
    """Run one upkeep round over the rows in `appended`; what it found (nothing to do when none were appended).

    `upkeep_exporting_to(export)`: the process's upkeep, exporting each checkpoint through `export`
    (which records it here and passes it on to the configured exporter).
    """
    rows = tuple(sorted(appended.remembered()))
    if not rows:
        return OwnRowsRound(())
    exported: list[Checkpoint] = []
    upkeep = upkeep_exporting_to(exported.append)
    try:
        upkeep.run_once_watched()
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM/SIGHUP as the admin CLI raises them: name the ids
        return OwnRowsRound(rows, exported=tuple(exported), failure=f"interrupted: {str(stop) or 'Ctrl-C'}")
    except Exception as error:  # any failure leaves the rows unchecked: the command must say so, not exit 0
        return OwnRowsRound(rows, exported=tuple(exported), failure=f"{type(error).__name__}: {error}")
    missing = sorted({i for checkpoint in exported for i in checkpoint.missing}.intersection(rows))
    unexported = sorted(set(appended.remembered()).intersection(rows).difference(missing))
    return OwnRowsRound(rows, tuple(missing), tuple(exported), unexported=tuple(unexported))
