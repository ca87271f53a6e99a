"""The vault service over gRPC (mTLS as identity `etl-service`), implementing Tokenizer."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from etl_service.errors import DependencyDown, Misconfigured, VaultCallFailed, vault_status_error
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

log = logging.getLogger(__name__)

MAX_ITEMS_PER_CALL = 5_000
PROBE_IP = "192.0.2.1"
PROBE_DEVICE_ID = "tokenvault-etl-start-up-probe"


class VaultClientError(VaultCallFailed):
    """The vault answered something this client cannot use (a bug or a version mismatch)."""


class GrpcTokenizer:
    """Tokenizes ips and device ids in batched Tokenize calls."""

    def __init__(self, channel: grpc.Channel, timeout_seconds: float = 10.0) -> None:
        self._stub = vault_pb2_grpc.TokenVaultStub(channel)
        self._health_check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]  # stubs omit it
        self._timeout = timeout_seconds

    def ready(self) -> None:
        """The vault reports SERVING (grpc.health.v1; it does so only with its database up)."""
        try:
            response = self._health_check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        except grpc.RpcError as error:
            code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
            raise DependencyDown(f"vault service health check: {code.name}", "vault") from None
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise DependencyDown("vault service reports NOT_SERVING", "vault")

    def check_access(self) -> None:
        """At start: the TLS handshake, the ETL's identity and its permission to tokenize both types.

        Tokenizes two documentation values (RFC 5737's 192.0.2.1 and a fixed probe id: no
        PII) - the only way to learn the permission without a dedicated RPC. Raises
        Misconfigured for a refusal, DependencyDown when the vault cannot be reached
        (a refused client certificate shows as UNAVAILABLE with a handshake error).
        """
        ip_tokens, device_tokens = self.tokenize([PROBE_IP], [PROBE_DEVICE_ID])
        if PROBE_IP not in ip_tokens or PROBE_DEVICE_ID not in device_tokens:
            raise Misconfigured(
                "the vault refused to tokenize the start-up probe values: the ETL's identity may not tokenize"
                " ip and device_id (config/vault-policy.toml)",
                "vault",
            )

    def tokenize(self, ips: Sequence[str], device_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        """(ip -> token, device_id -> token); refused values are left out and logged by count.

        Sent as value columns (one repeated string per type): no message per value to build
        on this side or to read on the vault's.
        """
        ip_tokens: dict[str, str] = {}
        device_tokens: dict[str, str] = {}
        refused = 0
        for ip_chunk, device_chunk in chunked_columns(ips, device_ids, MAX_ITEMS_PER_CALL):
            request = vault_pb2.TokenizeRequest(
                columns=[
                    vault_pb2.ValueColumn(type=vault_pb2.TOKEN_TYPE_IP, values=ip_chunk),
                    vault_pb2.ValueColumn(type=vault_pb2.TOKEN_TYPE_DEVICE_ID, values=device_chunk),
                ]
            )
            response = self._call(request)
            if len(response.columns) != len(request.columns):
                raise VaultClientError("the vault service did not answer value columns (is it older than the ETL?)")
            ip_column, device_column = response.columns
            for values, column, target in (
                (ip_chunk, ip_column, ip_tokens),
                (device_chunk, device_column, device_tokens),
            ):
                tokens = list(column.tokens)
                if len(tokens) != len(values):
                    raise VaultClientError(f"the vault answered {len(tokens)} tokens for {len(values)} values")
                target.update((value, token) for value, token in zip(values, tokens, strict=True) if token)
                refused += len(column.errors)
        if refused:
            log.warning("vault refused values", extra={"refused_count": refused})
        return ip_tokens, device_tokens

    def _call(self, request: vault_pb2.TokenizeRequest) -> vault_pb2.TokenizeResponse:
        try:
            response: vault_pb2.TokenizeResponse = self._stub.Tokenize(
                request, timeout=self._timeout, wait_for_ready=False
            )
        except grpc.RpcError as error:
            code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
            detail = (error.details() if hasattr(error, "details") else "") or ""
            raise vault_status_error(code.name, detail, "Tokenize") from None
        return response


def chunked_columns(
    ips: Sequence[str], device_ids: Sequence[str], limit: int
) -> Iterator[tuple[Sequence[str], Sequence[str]]]:
    """(ips, device ids) pieces of at most `limit` values together; one piece when all fit."""
    ip_at = device_at = 0
    while True:
        ip_chunk = ips[ip_at : ip_at + limit]
        device_chunk = device_ids[device_at : device_at + limit - len(ip_chunk)]
        yield ip_chunk, device_chunk
        ip_at, device_at = ip_at + len(ip_chunk), device_at + len(device_chunk)
        if ip_at >= len(ips) and device_at >= len(device_ids):
            return
