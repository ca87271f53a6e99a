"""Each client's share of the vault's calls in progress, its audit, its setting, and the client's retry."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.unit.fakes import FakeAuditLog
from tests.unit.rpc_errors import FakeRpcError
from tests.unit.vault_settings import vault_env
from tokenvault_client import GRPC_SLOTS_FULL, RateLimited, ServerBusy, Unavailable
from tokenvault_client.errors import from_rpc_error
from tokenvault_client.retry import RetryPolicy, call_with_retry
from tokenvault_common.env import ConfigError
from vault_service.config import VaultServiceConfig
from vault_service.domain.errors import TooManyCallsAtOnce
from vault_service.entrypoints.call_slots import CallSlots
from vault_service.service.metering import RefusalAuditor


def test_a_client_holds_at_most_its_share_and_others_keep_theirs() -> None:
    slots = CallSlots(2)
    slots.take("etl-service")
    slots.take("etl-service")
    with pytest.raises(TooManyCallsAtOnce) as refused:
        slots.take("etl-service")
    assert str(refused.value).startswith("client 'etl-service' already has 2 calls in progress")
    assert "TOKENVAULT_MAX_CALLS_PER_CLIENT" in str(refused.value) and refused.value.retry_after == 0.1
    slots.take("analyst")  # another identity has its own share
    slots.release("etl-service")
    slots.take("etl-service")  # a finished call frees its slot
    assert (slots.in_progress("etl-service"), slots.in_progress("analyst")) == (2, 1)
    with pytest.raises(ValueError, match="at least one call slot"):
        CallSlots(0)


def test_refusals_over_the_share_are_audited_as_one_row_per_client_and_method() -> None:
    audit = FakeAuditLog()
    auditor = RefusalAuditor(audit)
    for _ in range(3):
        auditor.counted("etl-service", "tokenize", "calls over the client's share of calls at once")
    assert audit.events == []  # nothing written while the flood goes on
    (row,) = auditor.flush()
    assert (row.client, row.action, row.item_count) == ("etl-service", "tokenize", 3)
    assert row.outcome == "refused: 3 calls over the client's share of calls at once"


def test_the_share_defaults_to_half_the_workers_and_may_not_exceed_them(tmp_path: Path) -> None:
    assert VaultServiceConfig.from_env(vault_env(tmp_path)).max_calls_per_client == 8  # 16 workers
    assert VaultServiceConfig.from_env(vault_env(tmp_path, TOKENVAULT_WORKERS="6")).max_calls_per_client == 3
    with pytest.raises(ConfigError, match=r"TOKENVAULT_MAX_CALLS_PER_CLIENT \(20\) is above TOKENVAULT_WORKERS"):
        VaultServiceConfig.from_env(vault_env(tmp_path, TOKENVAULT_MAX_CALLS_PER_CLIENT="20"))


def test_the_client_retries_a_call_grpc_refused_with_every_slot_taken_but_not_a_vault_limit() -> None:
    full = from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, GRPC_SLOTS_FULL))
    assert isinstance(full, ServerBusy) and isinstance(full, Unavailable) and full.retryable
    share = from_rpc_error(
        FakeRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, "client 'analyst' already has ...", (("retry-after-ms", "100"),)
        )
    )
    assert isinstance(share, RateLimited) and share.retry_after == 0.1

    answers: list[Exception | str] = [full, full, "revealed"]
    waits: list[float] = []

    def call() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert call_with_retry(call, RetryPolicy(initial_backoff=0.01), sleep=waits.append) == "revealed"
    assert len(waits) == 2
