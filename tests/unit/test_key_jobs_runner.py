"""`KeyJobs`: authorized first, one job at a time, stopped after a batch by `stop()` (the SIGTERM path)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from vault_service.domain.errors import InvalidRequest, KeyJobRunning, KeyJobStopped, PermissionDenied, VaultError
from vault_service.domain.identity import Caller
from vault_service.service.key_jobs import DEFAULT_BATCH_SIZE, KeyJobs, batch_size_of
from vault_service.service.rotation_status import RotationStatus

TEAM = Caller("security-team", "1f", "ab" * 32)


class FakeRotation:
    """Moves `rows` in batches, waiting on `gate` before each; records outcomes as KeyRotation would."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.gate = threading.Semaphore(0)
        self.outcomes: list[str] = []
        self.batch_sizes: list[int] = []

    def status(self) -> RotationStatus:
        return RotationStatus(1, [], self.rows, 0)

    def reencrypt(self, purpose: str, batch_size: int, progress) -> int:  # type: ignore[no-untyped-def]
        self.batch_sizes.append(batch_size)
        done = 0
        try:
            while done < self.rows:
                self.gate.acquire()
                step = min(batch_size, self.rows - done)
                done += step
                progress("reencrypt", step)
        except VaultError as error:
            self.outcomes.append(f"failed: {error}")
            raise
        self.outcomes.append(f"ok: {done}")
        return done


def _jobs(rotation: FakeRotation, allowed: bool = True) -> KeyJobs:
    def authorize(caller: Caller, job: str) -> None:
        if not allowed:
            raise PermissionDenied(f"client {caller.name!r} may not run the key job {job}")

    @contextmanager
    def session(caller: Caller) -> Iterator[FakeRotation]:
        yield rotation

    return KeyJobs(authorize, session)  # type: ignore[arg-type]


def test_the_batch_size_defaults_when_unset_and_is_bounded() -> None:
    assert batch_size_of(0) == DEFAULT_BATCH_SIZE and batch_size_of(7) == 7
    with pytest.raises(InvalidRequest, match="from 1 to 100000, not 100001"):
        batch_size_of(100_001)


def test_a_refused_caller_starts_nothing() -> None:
    rotation = FakeRotation(3)
    with pytest.raises(PermissionDenied):
        _jobs(rotation, allowed=False).start(TEAM, "reencrypt", "CHG-1", 1)
    assert rotation.batch_sizes == []


def test_one_job_at_a_time_then_a_stop_ends_it_after_its_batch_with_its_outcome_recorded() -> None:
    rotation = FakeRotation(10)
    jobs = _jobs(rotation)
    running = jobs.start(TEAM, "reencrypt", "CHG-1", 2)
    updates = running.updates()
    rotation.gate.release()
    first = next(updates)
    assert (first.phase, first.rows_done, first.rows_total) == ("reencrypt", 2, 10)

    with pytest.raises(
        KeyJobRunning, match=r"reencrypt started by 'security-team', serial 1f at .*, 2 of 10 rows done"
    ):
        jobs.start(TEAM, "reindex", "CHG-2", 1)

    running.stop("the vault service is stopping (SIGTERM)")  # what KeyJobs.stop does first
    rotation.gate.release()  # the batch in progress ends; the stop takes effect after it
    assert jobs.stop("the vault service is stopping (SIGTERM)", 5)  # ended within the bound
    with pytest.raises(KeyJobStopped, match="stopped after 4 row"):
        list(updates)
    assert rotation.outcomes == [
        "failed: the reencrypt job stopped after 4 row(s): the vault service is stopping (SIGTERM);"
        " run it again: it resumes where it stopped"
    ]
    assert jobs.stop("again", 0.1)  # nothing runs any more
