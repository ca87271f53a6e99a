"""Detokenize answers into typed outcomes: the column form, and the per-item form of older vaults.

The column form is decoded without a Python-level call per value: its three repeated fields
are zipped and each position becomes a `Revealed` through `tuple.__new__` (what a NamedTuple's
own constructor does, minus its Python frame), then the few failed positions are replaced by
their `ItemError`. About ten times cheaper than reading one message per token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from itertools import repeat
from typing import Any, Generic, TypeVar, cast

from tokenvault_api.v1 import vault_pb2
from tokenvault_client.models import (
    DetokenizeOutcome,
    ItemError,
    Reveal,
    Revealed,
    TokenType,
    reveal_from_proto,
    reveal_levels_by_number,
    token_types_by_number,
)

K = TypeVar("K")
V = TypeVar("V")


class _WithDefault(dict[K, V], Generic[K, V]):
    """A dict whose missing keys read as `default` even through `__getitem__` (usable in `map`)."""

    def __init__(self, items: Mapping[K, V], default: V) -> None:
        super().__init__(items)
        self._default = default

    def __missing__(self, key: K) -> V:
        return self._default


_TYPE_OF: _WithDefault[vault_pb2.TokenType.ValueType, TokenType | None] = _WithDefault(token_types_by_number(), None)
_REVEAL_OF: _WithDefault[vault_pb2.Reveal.ValueType, Reveal] = _WithDefault(
    reveal_levels_by_number(), Reveal.MASKED
)  # never assume plain
_new_revealed = cast(Callable[[type[Revealed], tuple[Any, ...]], Revealed], tuple.__new__)


class MalformedAnswer(ValueError):
    """The answer does not fit the request (a vault speaking another version?)."""


def outcomes_from_column(column: vault_pb2.RevealedColumn, count: int) -> list[DetokenizeOutcome]:
    """The outcome of each of `count` tokens from a RevealedColumn; MalformedAnswer if it does not fit."""
    values, types, reveals = column.values, column.types, column.reveals
    if not len(values) == len(types) == len(reveals) == count:
        raise MalformedAnswer(
            f"a column of {len(values)} values, {len(types)} types, {len(reveals)} reveals for {count} tokens"
        )
    rows: Iterable[tuple[Any, ...]] = zip(
        map(_TYPE_OF.__getitem__, types), values, map(_REVEAL_OF.__getitem__, reveals), strict=True
    )
    outcomes: list[DetokenizeOutcome] = list(map(_new_revealed, repeat(Revealed), rows))
    for position, error in column.errors.items():
        if position >= count:
            raise MalformedAnswer(f"an error at position {position} of a column of {count}")
        outcomes[position] = ItemError.from_proto(error)
    return outcomes


def outcomes_from_results(results: Iterable[vault_pb2.DetokenizeResult], count: int) -> list[DetokenizeOutcome]:
    """The outcome of each of `count` tokens from per-item results; MalformedAnswer if they do not fit."""
    outcomes = [_outcome(result) for result in results]
    if len(outcomes) != count:
        raise MalformedAnswer(f"{len(outcomes)} Detokenize results for {count} tokens")
    return outcomes


def _outcome(result: vault_pb2.DetokenizeResult) -> DetokenizeOutcome:
    if result.WhichOneof("result") == "error":
        return ItemError.from_proto(result.error)
    value = result.value
    return Revealed(TokenType.from_proto(value.type), value.value, reveal_from_proto(value.reveal))
