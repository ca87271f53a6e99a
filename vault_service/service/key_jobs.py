"""The key jobs the service runs for a client certificate (the KeyJobs gRPC service): one at a time, off the hot path.

`reencrypt` and `reindex` must open every stored value. Run as an admin command they needed the
service's Vault login and database role, so whoever ran them held what the service holds. Here
the running service does the work with its own credentials, in a thread of its own on database
connections of its own (the session `JobSession` gives: entrypoints/key_job_session.py), and the
caller holds only a client certificate the policy allows the job (`key_jobs`); the job's intent
and outcome rows name that certificate. No value leaves the service: the caller gets progress
(rows done per phase) and the outcome.

One job at a time per vault process (`KeyJobRunning`, naming the running one, for a second): a
job's batches lock rows (`FOR UPDATE SKIP LOCKED`) and keep a connection busy, and two would only
race each other. When `stop()` is called - its caller went away, or the service is stopping
(SIGTERM) - a job starts no further batch: the stop is checked before each batch (the first too)
and after each, so a job stopped while it waited (say for its connections) moves nothing
(attack 26, F3); it records `failed: ... stopped ...` as its outcome. The jobs are resumable, so
calling again continues where it stopped.

Every refusal is on the record (attack 26, F1): PermissionDenied by `authorize`, and a malformed
call or a second job (InvalidRequest, KeyJobRunning) by `refused`, throttled per peer as every
refusal. A batch is MIN_BATCH_SIZE rows or more (attack 26, F4): one transaction and one audit
row per value made a 10M-value job of 19 hours and 10M rows.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vault_service.domain.admin_reason import check_reason
from vault_service.domain.errors import InvalidRequest, KeyJobRunning, KeyJobStopped, StorageError, VaultError
from vault_service.domain.identity import Caller
from vault_service.service.rotation import KeyRotation

if TYPE_CHECKING:
    from vault_service.service.key_commands import KeyCommands

log = logging.getLogger(__name__)

JobSession = Callable[[Caller], AbstractContextManager[KeyRotation]]
"""`session(caller)`: the key operations audited as `caller`, on the job's own connections, anchored."""
Authorize = Callable[[Caller, str], None]
"""`authorize(caller, job)`: raises (audited) PermissionDenied unless the policy gives `caller` the job."""
Refused = Callable[[Caller, str, VaultError], None]
"""`refused(caller, job, error)`: audits (throttled per peer) a key-job call refused after its authorization."""


def _not_audited(caller: Caller, job: str, error: VaultError) -> None:
    """The default `Refused` of unit tests: nothing recorded."""


DEFAULT_BATCH_SIZE = 1000
MIN_BATCH_SIZE = 100
"""Rows per batch at least: each batch is a transaction and an audit row (attack 26, F4)."""
MAX_BATCH_SIZE = 100_000
BATCH_SIZES = f"a number of rows from {MIN_BATCH_SIZE} to {MAX_BATCH_SIZE}"
_MAIN_PHASE = {"reencrypt": "reencrypt", "reindex": "reindex"}
_UNSTOPPABLE = frozenset({"compact"})
"""Phases a stop does not cut: compaction moves fingerprints into place and is short; a stop there waits for it."""


@dataclass(frozen=True)
class JobUpdate:
    """Progress of a key job (rows done in `phase` so far), or its outcome when `finished`."""

    phase: str
    rows_done: int
    rows_total: int = 0
    outcome: str = ""
    rows_moved: int = 0
    finished: bool = False


def batch_size_of(asked: int) -> int:
    """The batch size to use: `asked`, or DEFAULT_BATCH_SIZE for 0; InvalidRequest outside MIN..MAX_BATCH_SIZE."""
    if asked == 0:
        return DEFAULT_BATCH_SIZE
    if not MIN_BATCH_SIZE <= asked <= MAX_BATCH_SIZE:
        raise InvalidRequest(f"a batch size is {BATCH_SIZES}, not {asked}")
    return asked


class RunningJob:
    """One key job in its own thread; `updates()` yields its progress, then its outcome (or raises its error)."""

    def __init__(self, job: str, caller: Caller, reason: str, batch_size: int, session: JobSession) -> None:
        self.job = job
        self.caller = caller
        self.started = time.time()
        self._reason = reason
        self._batch_size = batch_size
        self._session = session
        self._updates: queue.Queue[JobUpdate | None] = queue.Queue()
        self._done: Counter[str] = Counter()
        self._total = 0
        self._stopped: str | None = None
        self._error: VaultError | None = None
        self._thread = threading.Thread(target=self._run, name=f"key-job-{job}", daemon=True)

    def start(self) -> None:
        """Start the job's thread."""
        self._thread.start()

    def stop(self, why: str) -> None:
        """Start no further batch of the job (a no-op once it has ended); `why` goes into its outcome row."""
        if self._stopped is None:
            self._stopped = why

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the job's thread; whether it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        """Whether the job's thread is still working."""
        return self._thread.is_alive()

    def describe(self) -> str:
        """Which job, for whom, since when and how far: what a second caller is told."""
        since = time.strftime("%H:%M:%S UTC", time.gmtime(self.started))
        serial = f", serial {self.caller.serial}" if self.caller.serial else ""
        done = self._done[_MAIN_PHASE[self.job]]
        stopping = f", stopping: {self._stopped}" if self._stopped else ""
        started = f"{self.job} started by {self.caller.name!r}{serial} at {since}"
        return f"{started}, {done} of {self._total} rows done{stopping}"

    def updates(self) -> Iterator[JobUpdate]:
        """Each update as the job makes it; after the last, the job's error is raised when it failed."""
        while (update := self._updates.get()) is not None:
            yield update
        if self._error is not None:
            raise self._error

    def _progress(self, phase: str, done: int) -> None:
        """KeyRotation's progress callback: an update; KeyJobStopped (recorded as the outcome) once stopped."""
        self._done[phase] += done
        total = self._total if phase == _MAIN_PHASE[self.job] else 0
        self._updates.put(JobUpdate(phase, self._done[phase], total))
        self._before_batch(phase)

    def _before_batch(self, phase: str) -> None:
        """KeyRotation's check before each batch (and `_progress`'s after it): KeyJobStopped once stopped."""
        if self._stopped is not None and phase not in _UNSTOPPABLE:
            raise KeyJobStopped(
                f"the {self.job} job stopped after {self._done[_MAIN_PHASE[self.job]]} row(s): {self._stopped};"
                " run it again: it resumes where it stopped"
            )

    def _run(self) -> None:
        try:
            with self._session(self.caller) as rotation:
                status = rotation.status()
                if self.job == "reencrypt":
                    self._total = status.rows_to_reencrypt
                    moved = rotation.reencrypt(self._reason, self._batch_size, self._progress, self._before_batch)
                    outcome = f"re-encrypted {moved} value(s); unused data keys retired"
                else:
                    self._total = status.rows_to_reindex
                    moved = rotation.reindex(self._reason, self._batch_size, self._progress, self._before_batch)
                    outcome = f"re-indexed {moved} value(s); the new fingerprint key is active"
            main = _MAIN_PHASE[self.job]
            self._updates.put(JobUpdate(main, self._done[main], self._total, outcome, moved, finished=True))
        except VaultError as error:
            log.warning("key job %s ended: %s: %s", self.job, type(error).__name__, error)
            self._error = error
        except Exception as error:  # a bug, or a driver error not translated: said by class only
            log.error("key job %s failed: %s", self.job, type(error).__name__)
            self._error = StorageError(f"the {self.job} job failed ({type(error).__name__}; see the vault's log)")
        finally:
            self._updates.put(None)


class KeyJobs:
    """Starts the key jobs a client's policy allows, one at a time; stops them at shutdown.

    `commands`: the short key commands served beside the jobs (status, rewrap, rotate-*, retire-kek-versions;
    service/key_commands.py), when the service serves them.
    """

    def __init__(
        self,
        authorize: Authorize,
        session: JobSession,
        refused: Refused = _not_audited,
        commands: KeyCommands | None = None,
    ) -> None:
        self.commands = commands
        self._authorize = authorize
        self._refused = refused
        self._session = session
        self._lock = threading.Lock()
        self._running: RunningJob | None = None

    def start(self, caller: Caller, job: str, reason: str, batch_size: int) -> RunningJob:
        """Start `job` for `caller`; refused before anything is done when not allowed, malformed, or one runs.

        PermissionDenied (audited) unless the policy gives `caller` the job; InvalidRequest for a
        reason the audit log may not keep or a batch size out of range; KeyJobRunning while a job runs.
        """
        self._authorize(caller, job)
        try:
            return self._start(caller, job, reason, batch_size)
        except (InvalidRequest, KeyJobRunning) as error:  # on the record as every refusal (attack 26, F1)
            self._refused(caller, job, error)
            raise

    def _start(self, caller: Caller, job: str, reason: str, batch_size: int) -> RunningJob:
        size = batch_size_of(batch_size)
        check_reason(reason)
        with self._lock:
            if self._running is not None and self._running.running:
                raise KeyJobRunning(
                    f"a key job is running on this vault already ({self._running.describe()}): one at a time;"
                    " wait for it to end, then run this one"
                )
            self._running = RunningJob(job, caller, reason, size, self._session)
            self._running.start()
            return self._running

    def stop(self, why: str, timeout: float) -> bool:
        """Stop the running job, if any (no further batch); whether it ended within `timeout` seconds."""
        with self._lock:
            running = self._running
        if running is None:
            return True
        running.stop(why)
        return running.join(timeout)
