"""The TokenVault gRPC servicer: converts messages in and out, nothing more."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import repeat
from typing import cast

import grpc

from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from vault_service.domain.errors import RateLimited, VaultError
from vault_service.domain.token_types import TokenType
from vault_service.entrypoints.columns import item_error, revealed_lists, to_column, to_results
from vault_service.entrypoints.guard import current_caller
from vault_service.entrypoints.metrics import count_items, count_outcomes, count_revealed, measured
from vault_service.entrypoints.status import nothing_stored_trailer, status_of
from vault_service.service.tokenizing import TokenizeOutcome
from vault_service.service.vault import TokenVault

log = logging.getLogger(__name__)


_TYPE_FROM_PROTO = {
    vault_pb2.TOKEN_TYPE_IP: TokenType.IP,
    vault_pb2.TOKEN_TYPE_DEVICE_ID: TokenType.DEVICE_ID,
}


def _code(outcome: object) -> str:
    return status_of(outcome).name if isinstance(outcome, VaultError) else "OK"


def _token_column(outcomes: list[TokenizeOutcome]) -> vault_pb2.TokenColumn:
    """Tokens as one repeated string (built in C), errors by position."""
    if all(map(isinstance, outcomes, repeat(str))):  # no errors: the outcomes are the tokens
        return vault_pb2.TokenColumn(tokens=cast(list[str], outcomes))
    tokens = [o if isinstance(o, str) else "" for o in outcomes]
    errors = {i: item_error(o) for i, o in enumerate(outcomes) if isinstance(o, VaultError)}
    return vault_pb2.TokenColumn(tokens=tokens, errors=errors)


def _error_codes(columns: list[list[TokenizeOutcome]]) -> list[str]:
    """The status code name of every failed item."""
    return [
        status_of(o).name
        for column in columns
        if not all(map(isinstance, column, repeat(str)))
        for o in column
        if isinstance(o, VaultError)
    ]


class TokenVaultServicer(vault_pb2_grpc.TokenVaultServicer):
    """gRPC face of the TokenVault use cases."""

    def __init__(self, vault: TokenVault) -> None:
        self._vault = vault

    @measured("Tokenize")
    def Tokenize(self, request: vault_pb2.TokenizeRequest, context: grpc.ServicerContext) -> vault_pb2.TokenizeResponse:
        """Batch tokenize, items and columns; per-item errors inside the response."""
        # Each item as a column of one value: the vault looks up every value of a type together.
        columns: list[tuple[TokenType | None, Sequence[str]]]
        columns = [(_TYPE_FROM_PROTO.get(item.type), [item.value]) for item in request.items]
        columns += [(_TYPE_FROM_PROTO.get(column.type), column.values) for column in request.columns]
        outcomes = self._call(context, self._vault.tokenize_columns, current_caller(), columns)
        failed = _error_codes(outcomes)
        count_outcomes("Tokenize", sum(map(len, outcomes)) - len(failed), failed)
        start = len(request.items)
        results = [
            vault_pb2.TokenizeResult(error=item_error(o))
            if isinstance(o, VaultError)
            else vault_pb2.TokenizeResult(token=o)
            for (o,) in outcomes[:start]
        ]
        return vault_pb2.TokenizeResponse(results=results, columns=[_token_column(c) for c in outcomes[start:]])

    @measured("Detokenize")
    def Detokenize(
        self, request: vault_pb2.DetokenizeRequest, context: grpc.ServicerContext
    ) -> vault_pb2.DetokenizeResponse:
        """Batch detokenize; audited; per-item errors inside the response (as a column when asked)."""
        caller = current_caller()
        outcomes = self._call(context, self._vault.detokenize, caller, list(request.tokens), request.purpose)
        lists = revealed_lists(outcomes)
        revealed = len(outcomes) - len(lists.errors)
        count_outcomes("Detokenize", revealed, lists.error_codes())
        if caller is not None:  # a served call always has one: the guard refuses a call without
            count_revealed(caller.name, revealed)
        if request.as_column:
            return vault_pb2.DetokenizeResponse(column=to_column(lists))
        return vault_pb2.DetokenizeResponse(results=to_results(lists))

    @measured("Erase")
    def Erase(self, request: vault_pb2.EraseRequest, context: grpc.ServicerContext) -> vault_pb2.EraseResponse:
        """Batch erase (administrative); audited; per-item errors inside the response."""
        outcomes = self._call(context, self._vault.erase, current_caller(), list(request.tokens), request.purpose)
        results = [
            vault_pb2.EraseResult(erased=True) if o is None else vault_pb2.EraseResult(error=item_error(o))
            for o in outcomes
        ]
        count_items("Erase", (_code(o) for o in outcomes))
        return vault_pb2.EraseResponse(results=results)

    @staticmethod
    def _call(context: grpc.ServicerContext, use_case, *args):  # type: ignore[no-untyped-def]
        try:
            return use_case(*args)
        except VaultError as error:
            trailer = []
            if isinstance(error, RateLimited):
                trailer.append(("retry-after-ms", str(int(error.retry_after * 1000))))
            if error.stored_nothing:
                trailer += nothing_stored_trailer(context)
            if trailer:
                context.set_trailing_metadata(tuple(trailer))
            context.abort(status_of(error), str(error))
        except Exception as error:
            # gRPC would answer UNKNOWN with the exception's text, which may quote data: log
            # the class only and answer with a message of our own.
            log.error("unexpected error in %s: %s", use_case.__name__, type(error).__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error in the vault service; it is logged, retry later")
