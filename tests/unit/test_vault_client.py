"""The vault client's chunking, retries and error mapping, against a fake stub."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.rpc_errors import FakeRpcError
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import (
    ChunkLimits,
    ClientIdentity,
    ItemError,
    NotFound,
    PermissionDenied,
    RateLimited,
    RetryPolicy,
    Reveal,
    TokenType,
    Unauthenticated,
    Unavailable,
    VaultClient,
)
from tokenvault_client.chunking import chunk_bounds, column_chunks, item_size
from tokenvault_client.errors import from_rpc_error

BAD_IP = vault_pb2.ItemError(code=3, message="not an ip")


class FakeStub:
    """Answers like the vault: ip tokens are 'tok:<value>', Detokenize reveals 'val:<token>'."""

    def __init__(self, burst: int = 10**9, burst_wait_ms: str = "0") -> None:
        self.failures: list[grpc.RpcError] = []
        self.calls: list[int] = []
        self.burst = burst
        self.burst_wait_ms = burst_wait_ms

    def _fail_or_count(self, count: int) -> None:
        if self.failures:
            raise self.failures.pop(0)
        if not count:  # as the vault's guard does
            raise FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "a call without tokens: send at least one token")
        if count > self.burst:
            raise FakeRpcError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{count} values in one call exceed the detokenize burst limit of {self.burst}",
                (("retry-after-ms", self.burst_wait_ms),),
            )
        self.calls.append(count)

    def Tokenize(self, request: vault_pb2.TokenizeRequest, timeout: float) -> vault_pb2.TokenizeResponse:
        self._fail_or_count(len(request.items) + sum(len(c.values) for c in request.columns))
        columns = [
            vault_pb2.TokenColumn(
                tokens=["" if v == "bad" else f"tok:{v}" for v in c.values],
                errors={
                    i: vault_pb2.ItemError(code=3, message="not an ip") for i, v in enumerate(c.values) if v == "bad"
                },
            )
            for c in request.columns
        ]
        results = [vault_pb2.TokenizeResult(token=f"tok:{i.value}") for i in request.items]
        return vault_pb2.TokenizeResponse(results=results, columns=columns)

    def Detokenize(self, request: vault_pb2.DetokenizeRequest, timeout: float) -> vault_pb2.DetokenizeResponse:
        self._fail_or_count(len(request.tokens))
        return vault_pb2.DetokenizeResponse(
            results=[
                vault_pb2.DetokenizeResult(error=vault_pb2.ItemError(code=5, message="none"))
                if t == "gone"
                else vault_pb2.DetokenizeResult(
                    value=vault_pb2.RevealedValue(
                        type=vault_pb2.TOKEN_TYPE_IP, value=f"val:{t}", reveal=vault_pb2.REVEAL_PLAIN
                    )
                )
                for t in request.tokens
            ]
        )

    def Erase(self, request: vault_pb2.EraseRequest, timeout: float) -> vault_pb2.EraseResponse:
        self._fail_or_count(len(request.tokens))
        return vault_pb2.EraseResponse(results=[vault_pb2.EraseResult(erased=True) for _ in request.tokens])


IDENTITY = ClientIdentity(Path("ca.pem"), Path("/certs/analyst.pem"), Path("/certs/analyst-key.pem"))


def client(stub: FakeStub, limits: ChunkLimits | None = None, **retry: float) -> tuple[VaultClient, list[float]]:
    slept: list[float] = []
    policy = RetryPolicy(**retry) if retry else RetryPolicy(initial_backoff=0.01)  # type: ignore[arg-type]
    return VaultClient(None, stub=stub, identity=IDENTITY, limits=limits, retry=policy, sleep=slept.append), slept


# -- chunking --------------------------------------------------------------------------------


@given(st.lists(st.text(max_size=40), max_size=300), st.integers(1, 50), st.integers(64, 600))
def test_chunks_cover_every_item_in_order_within_both_limits(items: list[str], max_items: int, max_bytes: int) -> None:
    limits = ChunkLimits(max_items, max_bytes)
    bounds = list(chunk_bounds(items, limits))
    assert [i for s, e in bounds for i in range(s, e)] == list(range(len(items)))
    for start, end in bounds:
        assert 1 <= end - start <= max_items
        assert end - start == 1 or sum(item_size(x) for x in items[start:end]) <= max_bytes


@given(st.lists(st.one_of(st.text(max_size=40), st.text("ab_-", max_size=40)), max_size=300), st.integers(1, 50))
def test_each_chunk_is_as_large_as_the_limits_allow(items: list[str], max_items: int) -> None:
    limits = ChunkLimits(max_items, 200)
    for start, end in chunk_bounds(items, limits):
        full = end - start == max_items or end == len(items)
        assert full or sum(item_size(x) for x in items[start : end + 1]) > limits.max_bytes


@given(st.lists(st.lists(st.text(max_size=20), max_size=60), max_size=4), st.integers(1, 30), st.integers(64, 400))
def test_column_calls_cover_every_value_in_order_within_both_limits(
    columns: list[list[str]], max_items: int, max_bytes: int
) -> None:
    calls = list(column_chunks(columns, ChunkLimits(max_items, max_bytes)))
    rebuilt: list[list[str]] = [[] for _ in columns]
    for call in calls:
        count = sum(end - start for _, start, end in call)
        assert 1 <= count <= max_items
        size = sum(item_size(columns[i][v]) for i, s, e in call for v in range(s, e))
        assert count == 1 or size <= max_bytes
        for index, start, end in call:
            rebuilt[index] += columns[index][start:end]
    assert rebuilt == columns


def test_ten_thousand_items_per_call_and_no_more() -> None:
    stub = FakeStub()
    vault, _ = client(stub)
    tokens = vault.tokenize([(TokenType.IP, f"10.0.{i // 256}.{i % 256}") for i in range(25_000)])
    assert stub.calls == [10_000, 10_000, 5_000]
    assert tokens[24_999] == "tok:10.0.97.167"


def test_large_values_are_split_by_bytes_before_count() -> None:
    stub = FakeStub()
    vault, _ = client(stub, ChunkLimits(max_items=10_000, max_bytes=100_000))
    vault.tokenize_columns([(TokenType.DEVICE_ID, ["x" * 1000] * 250)])
    assert stub.calls == [99, 99, 52]


def test_column_results_keep_positions_and_errors_across_calls() -> None:
    stub = FakeStub()
    vault, _ = client(stub, ChunkLimits(max_items=3))
    ips, devices = ["1", "bad", "3", "4"], ["a", "b", "bad"]
    ip_col, dev_col = vault.tokenize_columns([(TokenType.IP, ips), (TokenType.DEVICE_ID, devices)])
    assert ip_col.tokens == ["tok:1", "", "tok:3", "tok:4"] and set(ip_col.errors) == {1}
    assert dev_col.tokens == ["tok:a", "tok:b", ""] and dev_col.errors[2].code == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.calls == [3, 3, 1]


# -- errors and retries ----------------------------------------------------------------------


def test_nothing_to_send_makes_no_call() -> None:
    # The vault refuses calls without items; the client answers an empty input itself.
    stub = FakeStub()
    vault, _ = client(stub)
    assert vault.detokenize([], "CASE-1") == [] and vault.erase([], "GDPR-1") == [] and vault.tokenize([]) == []
    assert [c.tokens for c in vault.tokenize_columns([(TokenType.IP, []), (TokenType.DEVICE_ID, [])])] == [[], []]
    assert stub.calls == []


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
    ],
)
def test_status_codes_become_typed_errors(code: grpc.StatusCode, kind: type[Exception]) -> None:
    error = from_rpc_error(FakeRpcError(code, "said the vault"))
    assert isinstance(error, kind) and "said the vault" in str(error)


def test_rate_limit_carries_the_servers_wait() -> None:
    error = from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", (("retry-after-ms", "1500"),)))
    assert isinstance(error, RateLimited) and error.retry_after == 1.5 and not error.call_too_big


def test_rate_limited_calls_wait_as_long_as_the_server_says_then_succeed() -> None:
    stub = FakeStub()
    stub.failures = [FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "later", (("retry-after-ms", "700"),))] * 2
    vault, slept = client(stub)
    assert [r.value for r in vault.detokenize(["t1"], "CASE-1")] == ["val:t1"]  # type: ignore[union-attr]
    assert slept == [0.7, 0.7]


def test_rate_limit_waits_stop_at_the_policys_budget() -> None:
    stub = FakeStub()
    stub.failures = [FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "later", (("retry-after-ms", "4000"),))] * 5
    vault, slept = client(stub, max_rate_limit_wait=10.0)
    with pytest.raises(RateLimited) as raised:
        vault.detokenize(["t1"], "CASE-1")
    assert slept == [4.0, 4.0] and raised.value.retry_after == 4.0


def test_a_wait_the_sleep_cuts_short_raises_the_refusal_waited_for_without_trying_again() -> None:
    stub = FakeStub()
    stub.failures = [FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "later", (("retry-after-ms", "20000"),))] * 2
    stopping, waited = threading.Event(), []
    stopping.set()  # the caller is stopping: Event.wait returns True at once

    def sleep(seconds: float) -> bool:
        waited.append(seconds)
        return stopping.wait(seconds)

    vault = VaultClient(None, stub=stub, retry=RetryPolicy(max_attempts=1, max_rate_limit_wait=30.0), sleep=sleep)
    started = time.monotonic()
    with pytest.raises(RateLimited) as raised:
        vault.tokenize([(TokenType.IP, "10.0.0.1")])
    assert time.monotonic() - started < 1 and waited == [20.0] and raised.value.retry_after == 20.0
    assert len(stub.failures) == 1  # one attempt: the second refusal was never asked for


def test_a_call_larger_than_the_burst_is_halved_until_it_fits() -> None:
    stub = FakeStub(burst=300)
    vault, slept = client(stub)
    outcomes = vault.detokenize([f"t{i}" for i in range(1000)], "CASE-1")
    assert len(outcomes) == 1000 and slept == []
    assert stub.calls == [250, 250, 250, 250]


def test_a_call_over_the_burst_is_halved_at_once_even_when_the_vault_names_a_wait() -> None:
    stub = FakeStub(burst=300, burst_wait_ms="5000")
    vault, slept = client(stub)
    assert len(vault.detokenize([f"t{i}" for i in range(600)], "CASE-1")) == 600
    assert slept == [] and stub.calls == [300, 300]


def test_a_call_refused_again_after_a_full_wait_is_split() -> None:
    stub = FakeStub()
    later = FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "later", (("retry-after-ms", "500"),))
    stub.failures = [later, later]
    vault, slept = client(stub)
    assert len(vault.detokenize([f"t{i}" for i in range(10)], "CASE-1")) == 10
    assert slept == [0.5] and stub.calls == [5, 5]  # waited once, then split instead of waiting again


def test_unavailable_is_retried_with_backoff_then_raised() -> None:
    stub = FakeStub()
    stub.failures = [FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down")] * 3
    vault, slept = client(stub, max_attempts=3, initial_backoff=0.1)
    with pytest.raises(Unavailable):
        vault.erase(["t1"], "ERASE-1")
    assert len(slept) == 2 and 0.05 <= slept[0] <= 0.1 and 0.1 <= slept[1] <= 0.2


def test_permission_denied_is_not_retried_and_names_the_certificate() -> None:
    stub = FakeStub()
    stub.failures = [FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "client 'analyst' may not erase values")]
    vault, slept = client(stub)
    with pytest.raises(PermissionDenied) as raised:
        vault.erase(["t1"], "ERASE-1")
    assert slept == [] and "/certs/analyst.pem" in str(raised.value)


def test_item_errors_and_revealed_values_are_typed_and_values_stay_out_of_reprs() -> None:
    vault, _ = client(FakeStub())
    found, gone = vault.detokenize(["t1", "gone"], "CASE-1")
    assert gone == ItemError(grpc.StatusCode.NOT_FOUND, "none")
    assert not isinstance(found, ItemError) and found.reveal is Reveal.PLAIN and found.token_type is TokenType.IP
    assert "val:t1" not in repr(found)


def test_progress_is_told_each_finished_call() -> None:
    done: list[int] = []
    vault, _ = client(FakeStub(), ChunkLimits(max_items=4))
    vault.erase([f"t{i}" for i in range(10)], "ERASE-1", progress=done.append)
    assert done == [4, 4, 2]


def test_the_make_run_summary_prints_whole_tokens_on_a_narrow_terminal() -> None:
    from rich.console import Console

    from devstack.demo import duplicates_table

    tokens = ["ip_7qwKnwTSu2ecvWSU-DjgMw", "dev_AbCdEfGhIjKlMnOpQrStUv"]
    console = Console(width=80, record=True)
    console.print(duplicates_table({"masked_ip": [(tokens[0], 3)], "masked_device_id": [(tokens[1], 2)]}))
    text = console.export_text()
    assert all(token in text for token in tokens)


def test_tokens_are_recognised_by_their_shape_and_prefix() -> None:
    from tokenvault_client import type_of_token

    assert type_of_token("ip_7qwKnwTSu2ecvWSU-DjgMw") is TokenType.IP
    assert type_of_token("dev_AbCdEfGhIjKlMnOpQrStUv") is TokenType.DEVICE_ID
    assert type_of_token("xx_AbCdEfGhIjKlMnOpQrStUv") is None
    assert type_of_token("ip_7qwKnwTSu2ecvWSU-DjgMw\n") is None
    assert type_of_token("199.172.111.135") is None


def test_a_refused_connection_and_a_refused_certificate_are_told_apart() -> None:
    down = from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect: Connection refused"))
    refused = from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect: Socket closed"))
    assert down.hint == "" and "issued by the vault's CA" in refused.hint


class StubLimitedAfterOneCall(FakeStub):
    """Erases the first call's tokens, then refuses every call with a wait longer than the client's budget."""

    def Erase(self, request: vault_pb2.EraseRequest, timeout: float) -> vault_pb2.EraseResponse:
        if self.calls:
            raise FakeRpcError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "may erase 18 values/hour", (("retry-after-ms", "60000"),)
            )
        return super().Erase(request, timeout)


def test_a_limit_reached_partway_through_a_split_erase_says_what_the_earlier_calls_did() -> None:
    vault, _ = client(StubLimitedAfterOneCall(), ChunkLimits(max_items=2), max_rate_limit_wait=1.0)
    with pytest.raises(RateLimited) as raised:
        vault.erase(["t1", "t2", "t3", "t4", "t5"], "GDPR-1")
    assert raised.value.done == [None, None]  # t1 and t2 are erased; t3 on were not sent
