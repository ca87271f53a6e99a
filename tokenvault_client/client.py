"""`VaultClient`: every call to the token vault goes through here.

It owns the channel (mTLS), puts a deadline on every attempt, retries what a later attempt
can fix (an unavailable vault with backoff, a rate limit after the server's `retry-after-ms`),
splits work into calls within the per-call limits, and raises typed errors
(`tokenvault_client.errors`) that name the certificate presented.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, Protocol, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_client.audit_reports import (
    REPORT_DEADLINE_SECONDS,
    AuditVerdict,
    WhoSawRow,
    audit_verify,
    audit_who_saw,
)
from tokenvault_client.channel import ClientIdentity, open_channel
from tokenvault_client.chunking import ChunkLimits, chunk_bounds, chunk_end, column_chunks
from tokenvault_client.decoding import MalformedAnswer, outcomes_from_column, outcomes_from_results
from tokenvault_client.errors import (
    PermissionDenied,
    ProtocolError,
    RateLimited,
    Unauthenticated,
    Unavailable,
    VaultClientError,
    from_rpc_error,
    never_sent,
)
from tokenvault_client.key_commands import KeyCommands
from tokenvault_client.key_jobs import KeyJobProgress, key_job_updates
from tokenvault_client.models import (
    DetokenizeOutcome,
    EraseOutcome,
    ItemError,
    TokenColumn,
    TokenOutcome,
    TokenType,
)
from tokenvault_client.retry import RetryPolicy, Sleep, call_with_retry

T = TypeVar("T")

Progress = Callable[[int], None]
"""Told how many items a finished call carried."""

Waiting = Callable[[VaultClientError, float], None]
"""Told before the client waits (error that caused it, seconds)."""


class VaultStub(Protocol):
    """The three unary methods of the generated TokenVault stub (a fake in unit tests)."""

    def Tokenize(self, request: vault_pb2.TokenizeRequest, timeout: float) -> vault_pb2.TokenizeResponse: ...  # noqa: D102

    def Detokenize(self, request: vault_pb2.DetokenizeRequest, timeout: float) -> vault_pb2.DetokenizeResponse: ...  # noqa: D102

    def Erase(self, request: vault_pb2.EraseRequest, timeout: float) -> vault_pb2.EraseResponse: ...  # noqa: D102


def _nothing(count: int) -> None:
    return None


class VaultClient:
    """A typed client of the TokenVault service. Thread-safe; close it (or use `with`) when done."""

    def __init__(
        self,
        channel: grpc.Channel | None,
        *,
        identity: ClientIdentity | None = None,
        deadline: float = 30.0,
        retry: RetryPolicy | None = None,
        limits: ChunkLimits | None = None,
        stub: VaultStub | None = None,
        sleep: Sleep = time.sleep,
        on_wait: Waiting | None = None,
        tokenize_sent_once: bool = False,
    ) -> None:
        """Wrap `channel` (or, in unit tests, a fake `stub`); `identity` only names the caller in errors.

        `sleep` waits between attempts; one that returns True (a stop event's `wait`) ends the wait and
        the call with the error waited for (tokenvault_client.retry.Sleep). `on_wait` is told before each wait.
        `tokenize_sent_once`: `channel` sends a Tokenize once, never retried by a gRPC retry policy (every channel
        this library opens: channel.py); a Tokenize that failed to connect was then never sent, so it stored
        nothing - its error says so (`nothing_stored`, errors.never_sent). Never for a channel opened otherwise.
        """
        if stub is None:
            if channel is None:
                raise ValueError("VaultClient needs a channel or a stub")
            stub = vault_pb2_grpc.TokenVaultStub(channel)
        self._channel = channel
        self._stub: Any = stub
        self._identity = identity
        self._deadline = deadline
        self._retry = retry or RetryPolicy()
        self._limits = limits or ChunkLimits()
        self._detokenize_max = self._limits.max_items  # lowered when a caller's burst is smaller
        self._sleep = sleep
        self._on_wait = on_wait
        self._tokenize_sent_once = tokenize_sent_once

    @classmethod
    def connect(cls, address: str, identity: ClientIdentity, **options: Any) -> VaultClient:
        """A client with its own mTLS channel to `address` (host:port); the channel retries nothing itself."""
        return cls(open_channel(address, identity), identity=identity, tokenize_sent_once=True, **options)

    def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            self._channel.close()

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ---------------------------------------------------------------------------------

    def ready(self, timeout: float = 2.0) -> None:
        """Return when the vault reports SERVING; raise Unavailable otherwise."""
        if self._channel is None:
            return
        check = health_pb2_grpc.HealthStub(self._channel).Check  # type: ignore[attr-defined]  # stubs omit it
        try:
            response = check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as error:
            raise self._typed(error) from None
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise Unavailable(grpc.StatusCode.UNAVAILABLE, "the vault service reports NOT_SERVING (database down?)")

    def tokenize(self, items: Sequence[tuple[TokenType, str]], progress: Progress = _nothing) -> list[TokenOutcome]:
        """The token of each (type, value), in order; an ItemError where a value got none."""
        out: list[TokenOutcome] = []
        values = [value for _, value in items]
        for start, end in chunk_bounds(values, self._limits):
            request = vault_pb2.TokenizeRequest(
                items=[vault_pb2.TokenizeItem(type=t.proto, value=v) for t, v in items[start:end]]
            )
            response = self._tokenize_call(request, after_others=start > 0)
            if len(response.results) != end - start:
                raise self._protocol(f"{len(response.results)} Tokenize results for {end - start} items")
            out += [
                ItemError.from_proto(r.error) if r.WhichOneof("result") == "error" else r.token
                for r in response.results
            ]
            progress(end - start)
        return out

    def tokenize_columns(
        self, columns: Sequence[tuple[TokenType, Sequence[str]]], progress: Progress = _nothing
    ) -> list[TokenColumn]:
        """Tokens of value columns (the compact form for bulk callers), one TokenColumn per column."""
        results = [TokenColumn([], {}) for _ in columns]
        for number, call in enumerate(column_chunks([values for _, values in columns], self._limits)):
            request = vault_pb2.TokenizeRequest(
                columns=[
                    vault_pb2.ValueColumn(type=columns[index][0].proto, values=columns[index][1][start:end])
                    for index, start, end in call
                ]
            )
            response = self._tokenize_call(request, after_others=number > 0)
            if len(response.columns) != len(call):
                raise self._protocol("the vault did not answer value columns (is it older than this client?)")
            for (index, start, end), answered in zip(call, response.columns, strict=True):
                if len(answered.tokens) != end - start:
                    raise self._protocol(f"{len(answered.tokens)} tokens for {end - start} values")
                target = results[index]
                offset = len(target.tokens)
                target.tokens.extend(answered.tokens)
                target.errors.update({offset + i: ItemError.from_proto(e) for i, e in answered.errors.items()})
            progress(sum(end - start for _, start, end in call))
        return results

    def detokenize(self, tokens: Sequence[str], purpose: str, progress: Progress = _nothing) -> list[DetokenizeOutcome]:
        """The value behind each token as the caller's policy reveals it; an ItemError where none.

        Waits out the caller's rate limit (as long as the retry policy allows) and splits calls
        larger than the caller's burst. Asks the vault for the column form (one RevealedColumn
        per call) and reads the per-item form from a vault older than it.
        """

        def one(part: Sequence[str]) -> list[DetokenizeOutcome]:
            request = vault_pb2.DetokenizeRequest(tokens=part, purpose=purpose, as_column=True)
            response = self._call(self._stub.Detokenize, request, splittable=len(part) > 1)
            try:
                if response.HasField("column"):
                    return outcomes_from_column(response.column, len(part))
                return outcomes_from_results(response.results, len(part))
            except MalformedAnswer as error:
                raise self._protocol(str(error)) from None

        return self._in_parts(tokens, one, progress)

    def erase(self, tokens: Sequence[str], purpose: str, progress: Progress = _nothing) -> list[EraseOutcome]:
        """Destroy the values behind `tokens`; None where erased, else an ItemError (NOT_FOUND ...)."""

        def one(part: Sequence[str]) -> list[EraseOutcome]:
            request = vault_pb2.EraseRequest(tokens=part, purpose=purpose)
            response = self._call(self._stub.Erase, request, splittable=len(part) > 1)
            if len(response.results) != len(part):
                raise self._protocol(f"{len(response.results)} Erase results for {len(part)} tokens")
            return [_erased(r) for r in response.results]

        return self._in_parts(tokens, one, progress, halve_over_budget=True)

    # -- plumbing ------------------------------------------------------------------------------

    def _in_parts(
        self,
        tokens: Sequence[str],
        call: Callable[[Sequence[str]], list[T]],
        progress: Progress,
        halve_over_budget: bool = False,
    ) -> list[T]:
        """`call` over chunks of `tokens`, halving a chunk the caller's burst cannot take.

        `halve_over_budget` (erase): a chunk refused because the limit has fewer left than it carries is halved too,
        down to one token, before the refusal is raised - so a request over what is left uses all that is left
        (walk 48, W48-7: 105 tokens against a burst of 100 erased 52 and left 48 unused).
        """
        out: list[T] = []
        start = 0
        while start < len(tokens):
            limits = self._limits
            if self._detokenize_max < limits.max_items:
                limits = ChunkLimits(self._detokenize_max, limits.max_bytes)
            part = tokens[start : chunk_end(tokens, start, limits)]
            try:
                out += call(part)
            except RateLimited as error:
                if len(part) == 1 or not (error.call_too_big or halve_over_budget):
                    error.done = list(out)  # what the earlier calls did stays known
                    raise
                self._detokenize_max = max(1, len(part) // 2)  # later calls start from the size that fits
                continue
            progress(len(part))
            start += len(part)
        return out

    def key_job(self, job: str, reason: str, batch_size: int = 0) -> Generator[KeyJobProgress]:
        """Have the vault run key job `job` (reencrypt, reindex) under the change ticket `reason`: its progress.

        Runs in the vault with the vault's own credentials; the caller's certificate must be given the
        job by the vault's policy (PermissionDenied otherwise). `batch_size` 0: the vault's default.
        """
        if self._channel is None:
            raise ValueError("key jobs need a channel")
        return key_job_updates(self._channel, job, reason, batch_size, self._typed)

    def audit_verify(
        self, max_copy_lag: float | None = None, deadline: float | None = None, exported_copy: bytes | None = None
    ) -> AuditVerdict:
        """Have the vault verify its audit log against an exported copy: the verdict (no value in it).

        The caller's certificate must be given `verify` by the vault's policy (PermissionDenied otherwise).
        `max_copy_lag`: seconds the copy may lag (None: the vault's default). `deadline`: seconds for the
        report (None: REPORT_DEADLINE_SECONDS; the vault takes at most that). `exported_copy`: the text of
        a copy the caller holds (the shipped log's checkpoint lines, at most 8 MiB), verified against
        instead of the vault's own (None: the vault's own, if it has one).
        """
        if self._channel is None:
            raise ValueError("audit reports need a channel")
        return audit_verify(
            self._channel, max_copy_lag, deadline or REPORT_DEADLINE_SECONDS, self._typed, exported_copy
        )

    def audit_who_saw(
        self, token: str, max_copy_lag: float | None = None, deadline: float | None = None, purpose: str = ""
    ) -> tuple[AuditVerdict, list[WhoSawRow]]:
        """Have the vault say who revealed or erased `token`, from its verified log: the verdict and the rows.

        `purpose`: the access request or case it answers (a reference such as DSAR-2026-0042), required
        by the vault and kept in the question's audit row. No row unless the verdict is intact. As
        `audit_verify` for the rest.
        """
        if self._channel is None:
            raise ValueError("audit reports need a channel")
        return audit_who_saw(
            self._channel, token, max_copy_lag, deadline or REPORT_DEADLINE_SECONDS, self._typed, purpose
        )

    def key_commands(self) -> KeyCommands:
        """The short key commands the vault runs for the caller's certificate (status, rewrap, rotate-*, retire-*).

        The vault's policy must give the certificate each command (PermissionDenied otherwise).
        """
        if self._channel is None:
            raise ValueError("key commands need a channel")
        return KeyCommands(self._channel, self._deadline, self._typed)

    def _tokenize_call(self, request: vault_pb2.TokenizeRequest, after_others: bool) -> vault_pb2.TokenizeResponse:
        """One Tokenize call of several (`after_others`: not the first): its error's `nothing_stored` speaks for all."""
        try:
            response: vault_pb2.TokenizeResponse = self._call(self._stub.Tokenize, request, tokenize=True)
        except VaultClientError as error:
            if after_others:  # the calls before it stored their values
                error.nothing_stored = False
            raise
        return response

    def _call(self, method: Callable[..., T], request: object, splittable: bool = False, tokenize: bool = False) -> T:
        def attempt() -> T:
            try:
                return method(request, timeout=self._deadline)
            except grpc.RpcError as error:
                typed = self._typed(error)
                if tokenize and self._tokenize_sent_once and never_sent(typed):  # reached no vault (walk46, W46-4)
                    typed.nothing_stored = True
                raise typed from None

        return call_with_retry(attempt, self._retry, self._sleep, self._on_wait, splittable)

    def _typed(self, error: grpc.RpcError) -> VaultClientError:
        typed = from_rpc_error(error)
        if self._identity is not None and (
            isinstance(typed, Unauthenticated | PermissionDenied) or (isinstance(typed, Unavailable) and typed.hint)
        ):
            typed.with_hint(f"presented {self._identity.describe()}")
        return typed

    def _protocol(self, text: str) -> ProtocolError:
        return ProtocolError(grpc.StatusCode.INTERNAL, text)


def _erased(result: vault_pb2.EraseResult) -> EraseOutcome:
    return ItemError.from_proto(result.error) if result.WhichOneof("result") == "error" else None
