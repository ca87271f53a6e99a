"""`KeyJobs`: authorized first, every refusal recorded, one job at a time, no further batch after `stop()`."""

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
    """Moves `rows` in batches, each waiting on `gate`, after `ready` (its intent row); outcomes as KeyRotation's."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.ready = threading.Event()
        self.ready.set()
        self.gate = threading.Semaphore(0)
        self.outcomes: list[str] = []
        self.batch_sizes: list[int] = []

    def status(self) -> RotationStatus:
        return RotationStatus(1, [], self.rows, 0)

    def reencrypt(self, purpose: str, batch_size: int, progress, before_batch=None) -> int:  # type: ignore[no-untyped-def]
        self.batch_sizes.append(batch_size)
        self.ready.wait()
        done = 0
        try:
            while done < self.rows:
                if before_batch is not None:
                    before_batch("reencrypt")
                self.gate.acquire()
                step = min(batch_size, self.rows - done)
                done += step
                progress("reencrypt", step)
        except VaultError as error:
            self.outcomes.append(f"failed: {error}")
            raise
        self.outcomes.append(f"ok: {done}")
        return done


def _jobs(rotation: FakeRotation, allowed: bool = True, refused: list[str] | None = None) -> KeyJobs:
    def authorize(caller: Caller, job: str) -> None:
        if not allowed:
            raise PermissionDenied(f"client {caller.name!r} may not run the key job {job}")

    @contextmanager
    def session(caller: Caller) -> Iterator[FakeRotation]:
        yield rotation

    def on_refused(caller: Caller, job: str, error: VaultError) -> None:
        if refused is not None:
            refused.append(f"{caller.serial} {job}: {type(error).__name__}")

    return KeyJobs(authorize, session, on_refused)  # type: ignore[arg-type]


def test_the_batch_size_defaults_when_unset_and_is_bounded() -> None:
    assert batch_size_of(0) == DEFAULT_BATCH_SIZE and batch_size_of(100) == 100
    for asked in (100_001, 99, 1):  # not one transaction and audit row per value (attack 26, F4)
        with pytest.raises(InvalidRequest, match=f"from 100 to 100000, not {asked}"):
            batch_size_of(asked)


def test_a_refused_caller_starts_nothing() -> None:
    rotation = FakeRotation(3)
    with pytest.raises(PermissionDenied):
        _jobs(rotation, allowed=False).start(TEAM, "reencrypt", "CHG-1", 100)
    assert rotation.batch_sizes == []


def test_one_job_at_a_time_then_a_stop_ends_it_after_its_batch_with_its_outcome_recorded() -> None:
    rotation = FakeRotation(1000)
    jobs = _jobs(rotation)
    running = jobs.start(TEAM, "reencrypt", "CHG-1", 200)
    updates = running.updates()
    rotation.gate.release()
    first = next(updates)
    assert (first.phase, first.rows_done, first.rows_total) == ("reencrypt", 200, 1000)

    with pytest.raises(
        KeyJobRunning, match=r"reencrypt started by 'security-team', serial 1f at .*, 200 of 1000 rows done"
    ):
        jobs.start(TEAM, "reindex", "CHG-2", 100)

    running.stop("the vault service is stopping (SIGTERM)")  # what KeyJobs.stop does first
    rotation.gate.release()  # the batch in progress ends; the stop takes effect after it
    assert jobs.stop("the vault service is stopping (SIGTERM)", 5)  # ended within the bound
    with pytest.raises(KeyJobStopped, match="stopped after 400 row"):
        list(updates)
    assert rotation.outcomes == [
        "failed: the reencrypt job stopped after 400 row(s): the vault service is stopping (SIGTERM);"
        " run it again: it resumes where it stopped"
    ]
    assert jobs.stop("again", 0.1)  # nothing runs any more


def test_a_job_stopped_before_its_first_batch_moves_no_batch() -> None:
    """Attack 26, F3: the client left while the job waited (its intent row); it did a batch of work anyway."""
    rotation = FakeRotation(1000)
    rotation.ready.clear()  # the job waits, say on its intent row, before any batch
    jobs = _jobs(rotation)
    running = jobs.start(TEAM, "reencrypt", "CHG-1", 100)
    running.stop("the call that started it ended")
    rotation.ready.set()
    rotation.gate.release(10)  # were a batch started, it would not wait
    assert running.join(5)
    with pytest.raises(KeyJobStopped, match="stopped after 0 row"):
        list(running.updates())
    assert rotation.outcomes[0].startswith("failed: the reencrypt job stopped after 0 row(s)")


def test_a_malformed_call_and_a_second_job_are_refused_on_the_record() -> None:
    """Attack 26, F1: only PERMISSION_DENIED left a row; a bad reason or batch size and a second job did not."""
    rotation = FakeRotation(1000)
    refused: list[str] = []
    jobs = _jobs(rotation, refused=refused)
    with pytest.raises(InvalidRequest):
        jobs.start(TEAM, "reencrypt", "CHG-1", 99)
    with pytest.raises(InvalidRequest):
        jobs.start(TEAM, "reencrypt", "user 10.0.0.1 asked", 100)
    running = jobs.start(TEAM, "reencrypt", "CHG-1", 100)
    with pytest.raises(KeyJobRunning):
        jobs.start(TEAM, "reindex", "CHG-2", 100)
    assert refused == ["1f reencrypt: InvalidRequest"] * 2 + ["1f reindex: KeyJobRunning"]
    running.stop("done")
    rotation.gate.release(10)
    assert running.join(5)
    with pytest.raises(PermissionDenied):  # audited by `authorize` itself, not a second time
        _jobs(rotation, allowed=False, refused=refused).start(TEAM, "reencrypt", "CHG-1", 100)
    assert len(refused) == 3
