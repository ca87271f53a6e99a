"""A gRPC error as a stub raises it, for tests of how the vault client reads refusals."""

from __future__ import annotations

import grpc


class FakeRpcError(grpc.RpcError):
    """A call's failure: its status code, details and trailing metadata (retry-after-ms, ...)."""

    def __init__(self, code: grpc.StatusCode, details: str = "", trailers: tuple[tuple[str, str], ...] = ()) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        """The status code."""
        return self._code

    def details(self) -> str:
        """The status message."""
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:  # type: ignore[override]
        """The trailing metadata, as (key, value) pairs."""
        return self._trailers
