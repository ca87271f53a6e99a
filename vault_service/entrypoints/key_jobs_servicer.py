"""The KeyJobs gRPC servicer: a key job (its progress streamed) or a short key command for the verified caller.

It converts messages in and out, nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC
from typing import TypeVar

import grpc

from tokenvault_api.v1 import key_jobs_pb2, key_jobs_pb2_grpc
from vault_service.domain.errors import RateLimited, Unauthenticated, VaultError
from vault_service.domain.identity import Caller
from vault_service.entrypoints.guard import current_caller
from vault_service.entrypoints.metrics import ROTATION_ROWS, ROTATION_ROWS_LEFT
from vault_service.entrypoints.status import status_of
from vault_service.service.key_commands import KeyCommands
from vault_service.service.key_jobs import JobUpdate, KeyJobs
from vault_service.service.rotation_status import RotationStatus

T = TypeVar("T")

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


def _status(status: RotationStatus) -> key_jobs_pb2.KeyStatusReply:
    return key_jobs_pb2.KeyStatusReply(
        keys=[
            key_jobs_pb2.DataKeyStatus(
                key_id=key.key_id, purpose=key.purpose, state=key.state, kek_version=key.kek_version
            )
            for key in status.keys
        ],
        kek_latest_version=status.kek_latest_version,
        kek_min_decryption_version=status.kek_min_decryption_version,
        kek_min_encryption_version=status.kek_min_encryption_version,
        rows_to_reencrypt=status.rows_to_reencrypt,
        rows_to_reindex=status.rows_to_reindex,
        rows_to_compact=status.rows_to_compact,
        safe_min_decryption_version=status.safe_min_decryption_version,
        interrupted=[
            key_jobs_pb2.InterruptedKeyJob(
                intent_row=job.intent_id,
                job=job.action,
                started_by=job.client,
                client_serial=job.client_serial,
                started_at=job.at.astimezone(UTC).isoformat(),
                reason=job.purpose,
            )
            for job in status.interrupted
        ],
        unpaired_outcomes=[
            key_jobs_pb2.UnpairedKeyJobOutcome(
                outcome_row=row.outcome_id,
                job=row.action,
                written_as=row.client,
                client_serial=row.client_serial,
                written_at=row.at.astimezone(UTC).isoformat(),
                reason=row.purpose,
                names_intent_row=row.intent_id,
                paired_by_row=row.paired_by,
            )
            for row in status.unpaired_outcomes
        ],
    )


def _caller() -> Caller:
    caller = current_caller()
    if caller is None:  # the guard admits no call without one
        raise Unauthenticated("no client identity: connect with a client certificate issued by the vault CA")
    return caller


def _count(update: JobUpdate, counted: dict[str, int]) -> None:
    """The service's rotation metrics (tokenvault_rotation_rows_total / _left{phase}) follow the job's progress."""
    if update.finished:
        return
    ROTATION_ROWS.labels(update.phase).inc(update.rows_done - counted.get(update.phase, 0))
    counted[update.phase] = update.rows_done
    if update.rows_total:
        ROTATION_ROWS_LEFT.labels(update.phase).set(max(0, update.rows_total - update.rows_done))


class KeyJobsServicer(key_jobs_pb2_grpc.KeyJobsServicer):
    """gRPC face of `KeyJobs`: Reencrypt and Reindex, each streaming progress, then the outcome; the short commands.

    Without `jobs.commands` the short commands answer UNIMPLEMENTED (the generated base's answer).
    """

    def __init__(self, jobs: KeyJobs) -> None:
        self._jobs = jobs
        self._commands = jobs.commands

    def _command(self, context: grpc.ServicerContext, run: Callable[[KeyCommands, Caller], T]) -> T:
        """`run(commands, caller)`; a domain error leaves as its status code and message."""
        if self._commands is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this vault serves no short key commands")
        try:
            return run(self._commands, _caller())
        except VaultError as error:
            if isinstance(error, RateLimited):  # the client's budget of key commands: when the next one fits
                context.set_trailing_metadata((("retry-after-ms", str(int(error.retry_after * 1000))),))
            context.abort(status_of(error), str(error))

    def Status(
        self, request: key_jobs_pb2.KeyStatusRequest, context: grpc.ServicerContext
    ) -> key_jobs_pb2.KeyStatusReply:
        """Where rotation stands: keys, KEK versions, work left, the safe min_decryption_version."""
        return _status(self._command(context, lambda commands, caller: commands.status(caller)))

    def Rewrap(self, request: key_jobs_pb2.KeyChangeRequest, context: grpc.ServicerContext) -> key_jobs_pb2.RewrapReply:
        """Rewrap every live data key under the KEK's newest version, in the service."""
        count = self._command(context, lambda commands, caller: commands.rewrap(caller, request.reason))
        return key_jobs_pb2.RewrapReply(outcome=f"ok: {count} data keys rewrapped", keys_rewrapped=count)

    def RotateEncryptionKey(
        self, request: key_jobs_pb2.KeyChangeRequest, context: grpc.ServicerContext
    ) -> key_jobs_pb2.RotateKeyReply:
        """A new active data-encryption key, made in the service."""
        key_id = self._command(context, lambda commands, caller: commands.rotate_encryption_key(caller, request.reason))
        return key_jobs_pb2.RotateKeyReply(outcome=f"ok: data key {key_id} active", key_id=key_id)

    def RotateFingerprintKey(
        self, request: key_jobs_pb2.KeyChangeRequest, context: grpc.ServicerContext
    ) -> key_jobs_pb2.RotateKeyReply:
        """A new pending fingerprint key, made in the service."""
        key_id = self._command(
            context, lambda commands, caller: commands.rotate_fingerprint_key(caller, request.reason)
        )
        return key_jobs_pb2.RotateKeyReply(outcome=f"ok: fingerprint key {key_id} pending", key_id=key_id)

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

    def RetireKekVersions(
        self, request: key_jobs_pb2.RetireKekVersionsRequest, context: grpc.ServicerContext
    ) -> key_jobs_pb2.RetireKekVersionsReply:
        """Raise the KEK's minimum versions, written with the operator's own Vault token after the service's checks.

        The token (`request.vault_token`) is handed to the command and nowhere else: not logged, not in any answer.
        """
        done = self._command(
            context,
            lambda commands, caller: commands.retire_kek_versions(
                caller, request.below, request.reason, request.vault_token
            ),
        )
        outcome = f"ok: KEK {done.kek_name} versions below v{done.below} retired"
        return key_jobs_pb2.RetireKekVersionsReply(kek_name=done.kek_name, below=done.below, outcome=outcome)

    def _run(
        self, job: str, request: key_jobs_pb2.KeyJobRequest, context: grpc.ServicerContext
    ) -> Iterator[key_jobs_pb2.KeyJobUpdate]:
        try:
            running = self._jobs.start(_caller(), job, request.reason, request.batch_size)
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
