"""Detokenize outcomes on the wire: the column form, and the per-item form for older clients.

A 1000-token call answered with one `DetokenizeResult` per token builds 2000 messages in
Python; the column form builds three lists (handed to protobuf's C code whole) and one
message per failed token only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import grpc

from tokenvault_api.v1 import vault_pb2
from vault_service.domain.errors import VaultError
from vault_service.domain.policy import RevealLevel
from vault_service.domain.token_types import TokenType
from vault_service.entrypoints.status import status_of
from vault_service.service.revealing import DetokenizeOutcome, Revealed

# Keyed by identity: an Enum member hashes through a Python-level __hash__, once per value
# here; its id() does not (members are singletons that live as long as the process).
_TYPE_NUMBER = {
    id(TokenType.IP): vault_pb2.TOKEN_TYPE_IP,
    id(TokenType.DEVICE_ID): vault_pb2.TOKEN_TYPE_DEVICE_ID,
}
_REVEAL_NUMBER = {id(RevealLevel.PLAIN): vault_pb2.REVEAL_PLAIN, id(RevealLevel.MASKED): vault_pb2.REVEAL_MASKED}
_NO_TYPE, _NO_REVEAL = object(), object()
"""What a failed token's row holds in place of a type and a reveal level (read as UNSPECIFIED)."""
_NOTHING = (_NO_TYPE, "", _NO_REVEAL)
_TYPE_NUMBER[id(_NO_TYPE)] = vault_pb2.TOKEN_TYPE_UNSPECIFIED
_REVEAL_NUMBER[id(_NO_REVEAL)] = vault_pb2.REVEAL_UNSPECIFIED
_CODE_NAME = {code.value[0]: code.name for code in grpc.StatusCode}


def item_error(error: VaultError) -> vault_pb2.ItemError:
    """The wire form of one item's failure (its message never holds a value)."""
    return vault_pb2.ItemError(code=status_of(error).value[0], message=str(error))


class RevealedLists(NamedTuple):
    """One call's outcomes as plain lists, one position per token; errors by position."""

    values: list[str]
    """The revealed value, '' where the token revealed nothing."""
    types: list[vault_pb2.TokenType.ValueType]
    """TokenType numbers, 0 (UNSPECIFIED) where the token revealed nothing."""
    reveals: list[vault_pb2.Reveal.ValueType]
    """Reveal numbers, 0 (UNSPECIFIED) where the token revealed nothing."""
    errors: dict[int, vault_pb2.ItemError]
    """Why a token revealed nothing, by position."""

    def error_codes(self) -> list[str]:
        """The status code name of each failed token (for metrics)."""
        return [_CODE_NAME.get(error.code, "UNKNOWN") for error in self.errors.values()]


def revealed_lists(outcomes: Sequence[DetokenizeOutcome]) -> RevealedLists:
    """Split the outcomes into columns; a Revealed with a level that reveals nothing is a bug (KeyError).

    The columns are cut in C: the Revealed tuples are transposed with zip(), and their enum
    members turned into numbers by identity through map(); a failed token stands in as an
    empty row and is listed in `errors`. No Python-level step per revealed value.
    """
    rows: Sequence[tuple[object, str, object]] = outcomes  # type: ignore[assignment]  # Revealed are such tuples
    errors: dict[int, vault_pb2.ItemError] = {}
    if list(map(type, outcomes)).count(Revealed) != len(outcomes):
        errors = {i: item_error(o) for i, o in enumerate(outcomes) if not isinstance(o, Revealed)}
        rows = [_NOTHING if i in errors else o for i, o in enumerate(outcomes)]  # type: ignore[misc]
    if not rows:
        return RevealedLists([], [], [], errors)
    types, values, levels = zip(*rows, strict=True)
    return RevealedLists(
        list(values),
        list(map(_TYPE_NUMBER.__getitem__, map(id, types))),
        list(map(_REVEAL_NUMBER.__getitem__, map(id, levels))),
        errors,
    )


def to_column(lists: RevealedLists) -> vault_pb2.RevealedColumn:
    """The column form (DetokenizeResponse.column)."""
    return vault_pb2.RevealedColumn(values=lists.values, types=lists.types, reveals=lists.reveals, errors=lists.errors)


def to_results(lists: RevealedLists) -> list[vault_pb2.DetokenizeResult]:
    """The per-item form (DetokenizeResponse.results), for clients that did not ask for a column."""
    errors = lists.errors
    return [
        vault_pb2.DetokenizeResult(error=errors[position])
        if position in errors
        else vault_pb2.DetokenizeResult(value=vault_pb2.RevealedValue(type=kind, value=value, reveal=reveal))
        for position, (value, kind, reveal) in enumerate(zip(lists.values, lists.types, lists.reveals, strict=True))
    ]
