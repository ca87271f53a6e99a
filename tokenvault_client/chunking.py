"""Splitting work into calls the vault accepts: at most N items and B bytes per call.

The vault refuses a call of more than 10 000 items, and gRPC refuses messages over the
server's maximum size; a chunk respects both, counting each value's encoded size plus the
protobuf framing around it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MAX_ITEMS_PER_CALL = 10_000
"""The vault's per-call limit (vault_service.domain.audit.MAX_ITEMS_PER_CALL)."""

MAX_REQUEST_BYTES = 1024 * 1024
"""A request size every vault accepts: a quarter of gRPC's default 4 MiB maximum message."""

ITEM_OVERHEAD_BYTES = 8
"""Protobuf framing per item: field tags, length prefixes, the type of a TokenizeItem."""


@dataclass(frozen=True)
class ChunkLimits:
    """How large one call may be."""

    max_items: int = MAX_ITEMS_PER_CALL
    """Items (values or tokens) per call."""
    max_bytes: int = MAX_REQUEST_BYTES
    """Estimated encoded request size per call."""

    def __post_init__(self) -> None:
        if self.max_items < 1 or self.max_bytes < 64:
            raise ValueError("chunk limits need max_items >= 1 and max_bytes >= 64")


def item_size(text: str) -> int:
    """Encoded size of one string item with its framing."""
    return len(text.encode("utf-8", "surrogatepass")) + ITEM_OVERHEAD_BYTES


def chunk_end(items: Sequence[str], start: int, limits: ChunkLimits) -> int:
    """Where the chunk that begins at `start` ends; a lone item larger than max_bytes goes alone."""
    end = min(len(items), start + limits.max_items)
    head = items[start:end]
    # ASCII text (every token is) has one byte per character: sized without encoding it.
    if all(map(str.isascii, head)) and sum(map(len, head)) + ITEM_OVERHEAD_BYTES * len(head) <= limits.max_bytes:
        return end
    position, size = start, 0
    while position < end:
        size += item_size(items[position])
        if size > limits.max_bytes and position > start:
            break
        position += 1
    return position


def chunk_bounds(items: Sequence[str], limits: ChunkLimits) -> Iterator[tuple[int, int]]:
    """(start, end) of consecutive chunks covering `items`; a lone item larger than max_bytes goes alone."""
    start = 0
    while start < len(items):
        end = chunk_end(items, start, limits)
        yield start, end
        start = end


def chunks(items: Sequence[str], limits: ChunkLimits) -> Iterator[Sequence[str]]:
    """Consecutive slices of `items` within `limits`."""
    for start, end in chunk_bounds(items, limits):
        yield items[start:end]


def column_chunks(columns: Sequence[Sequence[str]], limits: ChunkLimits) -> Iterator[list[tuple[int, int, int]]]:
    """Calls over several value columns: each a list of (column index, start, end) within `limits` together.

    Columns are filled in order, so a call holds the tail of one column and the head of the
    next; an empty input gives no call.
    """
    call: list[tuple[int, int, int]] = []
    count = size = 0
    for index, column in enumerate(columns):
        start = 0
        for position, value in enumerate(column):
            grown = size + item_size(value)
            if count and (count >= limits.max_items or grown > limits.max_bytes):
                if position > start:
                    call.append((index, start, position))
                yield call
                call, count, grown, start = [], 0, item_size(value), position
            count, size = count + 1, grown
        if len(column) > start:
            call.append((index, start, len(column)))
    if call:
        yield call
