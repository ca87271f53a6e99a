"""The ETL keeps no ip or device id in a cache past its batch (attack 34, E2).

`own_values._compact` was an lru_cache keyed by the device id (casefolded) and `ip_spellings.ip_forms`
one keyed by the ip: after the batch, and after the person's erasure, the values stayed in the ETL's
memory (a core dump, a heap dump, swap) until 4,096 others pushed them out. Every function cache of
the modules the ETL has loaded is searched, keys and values, for the batch's values.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator

from etl_service.service.batch import BatchProcessor
from tests.unit.etl_builders import good, message
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer

DEVICE_ID = "6D92078A-8246-4BA4-AE5B-76104861E7DC"  # an IDFV's shape: its compact form is checked in the id
IP = "2001:DB8::7"  # not a canonical IPv4 address: its spellings are built whole (`ip_forms`)


def _function_caches() -> Iterator[tuple[str, list[tuple[object, object]]]]:
    """(name, its (key, result) entries) of every functools cache in the ETL's and the shared modules loaded.

    A bounded lru_cache's dict maps each key to a link of its own list, which shows no referent: the result is
    read by calling the function with the key again (a hit: nothing is computed). Review 37 (R37-5): this read
    the keys alone, and a cache whose result held a value (`_ips_in_version`) passed.
    """
    for name, module in list(sys.modules.items()):
        if not name.startswith(("etl_service", "tokenvault_common")):
            continue
        for attribute, value in vars(module).items():
            if callable(value) and hasattr(value, "cache_info"):
                for referent in gc.get_referents(value):
                    if isinstance(referent, dict) and referent is not getattr(value, "__dict__", None):
                        yield f"{name}.{attribute}", [(k, _result(value, k, v)) for k, v in list(referent.items())]


def _result(function: Callable[..., object], key: object, held: object) -> object:
    """What a cache holds for `key`: `held`, or for a bounded lru_cache's link, the function's (cached) result.

    Read for the ETL's and the shared modules' own functions (untyped, positional: the key is the argument, or
    the arguments' tuple); an imported library's cache (urllib's, typed) is searched by its keys alone.
    """
    if type(held).__name__ != "_lru_list_elem":
        return held
    if not getattr(function, "__module__", "").startswith(("etl_service", "tokenvault_common")):
        return None
    assert not function.cache_parameters()["typed"], function  # type: ignore[attr-defined]
    return function(*key) if isinstance(key, tuple) else function(key)


def _strings(item: object) -> Iterator[str]:
    if isinstance(item, str):
        yield item
    elif isinstance(item, tuple | list | frozenset | set):
        for part in item:
            yield from _strings(part)


def test_no_function_cache_of_the_etl_holds_a_value_of_a_processed_batch() -> None:
    queue, store, tokenizer = FakeQueue(), FakeLoginStore(), FakeTokenizer()
    processor = BatchProcessor(queue, tokenizer, store)
    event = {**good(1, ip=IP), "device_id": DEVICE_ID}
    outcome = processor.process([message(1, event, event_id="evt-0a1b2c3d4e5f60718293a4b5")])
    assert outcome.loaded == 1 and tokenizer.calls  # validated, checked against its id, tokenized and loaded
    assert not _holding(DEVICE_ID.casefold(), "6d92078a82464ba4", "2001:db8::7")


def test_no_function_cache_keeps_the_version_of_an_event_refused_for_spelling_its_own_ip_in_it() -> None:
    """Review 37, R37-4: an app_version is stored in clear, so the version caches are keyed by it - but one that
    spells the event's own ip (`10.61.7` is 10.61.0.7 to inet_aton) gets the event refused, and `_ips_in_version`
    kept the version and the ip it spells past the batch."""
    queue, store, tokenizer = FakeQueue(), FakeLoginStore(), FakeTokenizer()
    processor = BatchProcessor(queue, tokenizer, store)
    spelled = {**good(1, ip="10.61.0.7"), "app_version": "10.61.7"}
    outcome = processor.process([message(1, spelled), message(2, good(2))])
    assert outcome.reasons == {"own_value_in_field": 1} and outcome.loaded == 1
    assert not _holding("10.61.0.7", "10.61.7")


def _holding(*values: str) -> list[str]:
    """The function caches one of whose keys or results holds one of `values` (casefolded)."""
    return sorted(
        {
            name
            for name, entries in _function_caches()
            for entry in entries
            for text in _strings(entry)
            if any(value in text.casefold() for value in values)
        }
    )
