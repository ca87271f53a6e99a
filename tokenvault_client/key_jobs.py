"""The key jobs the vault runs for the security team's certificate (tokenvault.v1.KeyJobs): progress as it comes.

The call has no deadline (a job over millions of values takes minutes); ending it - Ctrl-C,
closing the channel - makes the vault start no further batch of the job (a re-run resumes it).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import grpc

from tokenvault_api.v1 import key_jobs_pb2, key_jobs_pb2_grpc
from tokenvault_client.errors import VaultClientError

KEY_JOBS = ("reencrypt", "reindex")
"""The jobs the vault runs (each a KeyJobs method of the same name)."""


@dataclass(frozen=True)
class KeyJobProgress:
    """One update of a running key job: rows done in `phase`, or, when `finished`, the job's outcome."""

    phase: str
    rows_done: int
    rows_total: int
    outcome: str = ""
    rows_moved: int = 0
    finished: bool = False


def key_job_updates(
    channel: grpc.Channel,
    job: str,
    reason: str,
    batch_size: int,
    typed: Callable[[grpc.RpcError], VaultClientError],
) -> Generator[KeyJobProgress]:
    """Run `job` in the vault and yield its updates; its refusal or failure raised as a typed error."""
    if job not in KEY_JOBS:
        raise ValueError(f"no key job {job!r}; the key jobs are {', '.join(KEY_JOBS)}")
    stub = key_jobs_pb2_grpc.KeyJobsStub(channel)
    method = stub.Reencrypt if job == "reencrypt" else stub.Reindex
    call = method(key_jobs_pb2.KeyJobRequest(reason=reason, batch_size=batch_size))
    try:
        for update in call:
            yield KeyJobProgress(
                update.phase, update.rows_done, update.rows_total, update.outcome, update.rows_moved, update.finished
            )
    except grpc.RpcError as error:
        raise typed(error) from None
    finally:
        call.cancel()  # a no-op once it has ended; a caller that stops iterating ends the job
