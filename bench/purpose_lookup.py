"""The stored-value lookup of a purpose first seen, when it names a stored value and when it does not.

    python -m bench.purpose_lookup --rounds 3000

Review 18, R18-8: the lookup (`vault_service.service.stored_values`) is an existence oracle unless
a purpose naming a stored value costs what one naming none does, and a caller picks its purposes
and may time its calls. So each shape below is looked up as a *first* call (every purpose cache
cleared, a new `StoredValueLookup`), once with its value stored (hit) and once with another value
stored in its place (miss): same purpose, same candidates, same fingerprints; only the store's
answer differs. In process, with a store answering from a set (the same work hit or miss, as the
real query's `UNION ALL`), so what is timed is the vault's own work around the query. Hit and miss
alternate, the order flipped every round; printed: the best and the median of each, and the
median of hit minus miss over the pairs (`hit_extra`).

Also timed: what a hit adds after the lookup on every call, cached or not (`TokenVault._kept`:
the partial withhold remembered for the client and the purpose rewritten), against what a miss
does there (asking the memory only).

The last lines are `figure: <name> <value> <unit>`.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import NamedTuple, cast

from rich.console import Console

from bench.report import Figures, print_figures
from vault_service.domain.crypto import DataKey, fingerprints
from vault_service.domain.purpose_spans import with_groups_withheld
from vault_service.domain.token_types import TokenType, normalize_many
from vault_service.service.keyring import KeyManager
from vault_service.service.ports import StoredHits, TokenStore
from vault_service.service.stored_values import StoredValueLookup
from vault_service.service.withheld_purposes import WithheldPurposes

console = Console()


class Shape(NamedTuple):
    """A purpose and the value of another call it names."""

    name: str
    purpose: str
    token_type: TokenType
    value: str


SHAPES = (
    Shape("short", "INC-SM-G991B-ATK8Q7ZX", TokenType.DEVICE_ID, "SM-G991B-ATK8Q7ZX"),
    Shape("class", "INC-2026Q3-0001", TokenType.DEVICE_ID, "INC2026Q3"),
    Shape("erasure", "GDPR-2026-801-SM-G991B-QWERTYUI", TokenType.DEVICE_ID, "SM-G991B-QWERTYUI"),
    Shape("groups14", "INC-A-B-C-D-E-F-G-H-J-K-SM-G991B-QWERTYUI", TokenType.DEVICE_ID, "SM-G991B-QWERTYUI"),
    Shape("groups14_tail", "REQ-AB-CD-EF-GH-IJ-KL-MN-OP-QR-ST-UV-WX-SMG991BQ", TokenType.DEVICE_ID, "SMG991BQ"),
)
"""Purposes the shape check accepts (an address written out is refused before any lookup), 3 to 14 groups."""


class _SetStore:
    """The one `TokenStore` method the lookup calls, answered from a set: every probe tested, hit or miss."""

    def __init__(self, stored: set[tuple[str, bytes]]) -> None:
        self._stored = stored

    def stored_among(self, types: Sequence[str], fps: Sequence[bytes], tokens: Sequence[str] = ()) -> StoredHits:
        found = frozenset(fp for t, fp in zip(types, fps, strict=True) if (t, fp) in self._stored)
        return StoredHits(found, False)


def _clear_purpose_caches() -> None:
    """Every lru_cache of the purpose modules, whatever their split: the next call is a first call."""
    for name, module in list(sys.modules.items()):
        if name.startswith("vault_service.domain.purpose"):
            for thing in vars(module).values():
                if callable(getattr(thing, "cache_clear", None)):
                    thing.cache_clear()


def _lookups(shape: Shape, key: DataKey) -> tuple[Callable[[], object], Callable[[], object]]:
    """A first lookup of `shape.purpose` with its value stored, and one with nothing stored."""
    keys = cast(KeyManager, SimpleNamespace(ring=SimpleNamespace(fingerprint_key=key, pending_fingerprint_key=None)))
    (normalized,), _ = normalize_many(shape.token_type, [shape.value])
    assert isinstance(normalized, str)
    (fp,) = fingerprints(key, shape.token_type, [normalized])
    hit_store = cast(TokenStore, _SetStore({(shape.token_type.type_name, fp)}))
    miss_store = cast(TokenStore, _SetStore({(shape.token_type.type_name, bytes(32))}))  # as many stored, none named

    def first_call(store: TokenStore) -> Callable[[], object]:
        def call() -> object:
            lookup = StoredValueLookup(store, keys)
            _clear_purpose_caches()
            started = time.perf_counter_ns()
            withheld = lookup.groups_naming_stored_values(shape.purpose)
            return time.perf_counter_ns() - started, withheld

        return call

    return first_call(hit_store), first_call(miss_store)


def _timed(hit: Callable[[], object], miss: Callable[[], object], rounds: int) -> tuple[list[float], list[float]]:
    """µs of each hit and miss call, alternating, the order flipped every round (gc off while timing)."""
    hits: list[float] = []
    misses: list[float] = []
    gc.disable()
    try:
        for round_number in range(rounds):
            pair = ((hit, hits), (miss, misses)) if round_number % 2 == 0 else ((miss, misses), (hit, hits))
            for call, into in pair:
                elapsed, _ = cast(tuple[int, frozenset[int]], call())
                into.append(elapsed / 1000)
    finally:
        gc.enable()
    return hits, misses


def _withhold_after(shape: Shape, rounds: int, withheld: frozenset[int]) -> tuple[float, float]:
    """Best µs of what `_kept` does after the lookup: a hit remembers and rewrites, a miss asks the memory."""
    memory = WithheldPurposes()
    hit_times, miss_times = [], []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        memory.remember("analyst", shape.purpose, withheld)
        with_groups_withheld(shape.purpose, withheld | memory.withheld_before("analyst", shape.purpose))
        hit_times.append((time.perf_counter_ns() - started) / 1000)
        started = time.perf_counter_ns()
        memory.withheld_before("other", shape.purpose)
        miss_times.append((time.perf_counter_ns() - started) / 1000)
    return min(hit_times), min(miss_times)


def main() -> int:
    """Time each shape's first lookup, hit and miss; print the table and the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="hit and miss calls per shape")
    args = parser.parse_args()
    key = DataKey(1, os.urandom(32))
    figures: Figures = {}
    for shape in SHAPES:
        hit, miss = _lookups(shape, key)
        _, withheld = cast(tuple[int, frozenset[int]], hit())
        _, nothing = cast(tuple[int, frozenset[int]], miss())
        assert withheld and not nothing, shape
        hits, misses = _timed(hit, miss, args.rounds)
        extra = [h - m for h, m in zip(hits, misses, strict=True)]
        figures[f"{shape.name}_first_hit_best"] = (min(hits), "us")
        figures[f"{shape.name}_first_miss_best"] = (min(misses), "us")
        figures[f"{shape.name}_first_hit_median"] = (statistics.median(hits), "us")
        figures[f"{shape.name}_first_miss_median"] = (statistics.median(misses), "us")
        figures[f"{shape.name}_hit_extra_median"] = (statistics.median(extra), "us")
        kept_hit, kept_miss = _withhold_after(shape, args.rounds, withheld)
        figures[f"{shape.name}_withhold_after_hit_best"] = (kept_hit, "us")
        figures[f"{shape.name}_withhold_after_miss_best"] = (kept_miss, "us")
    print_figures(console, "first lookup of a distinct purpose, in process (µs)", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
