"""The KeyJobs gRPC servicer: starts a key job for the verified caller and streams its progress, nothing more."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from tokenvault_api.v1 import key_jobs_pb2, key_jobs_pb2_grpc
from vault_service.domain.errors import Unauthenticated, VaultError
from vault_service.entrypoints.guard import current_caller
from vault_service.entrypoints.metrics import ROTATION_ROWS, ROTATION_ROWS_LEFT
from vault_service.entrypoints.status import status_of
from vault_service.service.key_jobs import JobUpdate, KeyJobs

CLIENT_WENT_AWAY = "the call that started it ended (the client went away, or its deadline passed)"
"""Why a job stops when its call ends before the job does (its outcome row says so)."""


def _message(update: JobUpdate) -> key_jobs_pb2.KeyJobUpdate:
    return key_jobs_pb2.KeyJobUpdate(
        phase=update.phase,
        rows_done=update.rows_done,
        rows_total=update.rows_total,
        outcome=update.outcome,
        rows_moved=update.rows_moved,
        finished=update.finished,
    )


def _count(update: JobUpdate, counted: dict[str, int]) -> None:
    """The service's rotation metrics (tokenvault_rotation_rows_total / _left{phase}) follow the job's progress."""
    if update.finished:
        return
    ROTATION_ROWS.labels(update.phase).inc(update.rows_done - counted.get(update.phase, 0))
    counted[update.phase] = update.rows_done
    if update.rows_total:
        ROTATION_ROWS_LEFT.labels(update.phase).set(max(0, update.rows_total - update.rows_done))


class KeyJobsServicer(key_jobs_pb2_grpc.KeyJobsServicer):
    """gRPC face of `KeyJobs`: Reencrypt and Reindex, each streaming progress, then the outcome."""

    def __init__(self, jobs: KeyJobs) -> None:
        self._jobs = jobs

    def Reencrypt(
        self, request: key_jobs_pb2.KeyJobRequest, context: grpc.ServicerContext
    ) -> Iterator[key_jobs_pb2.KeyJobUpdate]:
        """Re-seal every value under the active data key, in the service; progress, then the outcome."""
        return self._run("reencrypt", request, context)

    def Reindex(
        self, request: key_jobs_pb2.KeyJobRequest, context: grpc.ServicerContext
    ) -> Iterator[key_jobs_pb2.KeyJobUpdate]:
        """Fingerprint every value under the pending key, in the service; progress, then the outcome."""
        return self._run("reindex", request, context)

    def _run(
        self, job: str, request: key_jobs_pb2.KeyJobRequest, context: grpc.ServicerContext
    ) -> Iterator[key_jobs_pb2.KeyJobUpdate]:
        caller = current_caller()
        try:
            if caller is None:  # the guard admits no call without one
                raise Unauthenticated("no client identity: connect with a client certificate issued by the vault CA")
            running = self._jobs.start(caller, job, request.reason, request.batch_size)
        except VaultError as error:
            context.abort(status_of(error), str(error))
        context.add_callback(lambda: running.stop(CLIENT_WENT_AWAY))  # a no-op once the job has ended
        counted: dict[str, int] = {}
        try:
            for update in running.updates():
                _count(update, counted)
                yield _message(update)
        except VaultError as error:
            context.abort(status_of(error), str(error))
