"""The gRPC edge answers unexpected failures with its own words, never the exception's text."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
import pytest

from tokenvault_api.v1 import vault_pb2
from vault_service.entrypoints.servicer import TokenVaultServicer


class Aborted(Exception):
    """What context.abort raises here, as grpc's does."""


class FakeContext:
    """The little of grpc.ServicerContext that the servicer uses on these paths."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_common_name": [b"analyst"]}

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        self.aborted = (code, details)
        raise Aborted

    def code(self) -> grpc.StatusCode | None:
        return self.aborted[0] if self.aborted else None

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass


class BrokenVault:
    """A vault whose every use case fails in a way nobody planned for."""

    def detokenize(self, *args: object) -> NoReturn:
        raise RuntimeError("row (10.0.0.1, ip_secret) violates something")


def test_an_unexpected_error_becomes_internal_with_no_detail_of_it() -> None:
    servicer = TokenVaultServicer(BrokenVault())  # type: ignore[arg-type]
    context = FakeContext()
    with pytest.raises(Aborted):
        servicer.Detokenize(
            vault_pb2.DetokenizeRequest(tokens=["ip_" + "A" * 22], purpose="CASE-1"),
            context,  # type: ignore[arg-type]
        )
    assert context.aborted is not None
    code, details = context.aborted
    assert code == grpc.StatusCode.INTERNAL
    assert "10.0.0.1" not in details and "ip_secret" not in details
    assert "internal error" in details
