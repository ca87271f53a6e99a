"""The ETL keeps no ip or device id in a cache past its batch (attack 34, E2).

`own_values._compact` was an lru_cache keyed by the device id (casefolded) and `ip_spellings.ip_forms`
one keyed by the ip: after the batch, and after the person's erasure, the values stayed in the ETL's
memory (a core dump, a heap dump, swap) until 4,096 others pushed them out. Every function cache of
the modules the ETL has loaded is searched, keys and values, for the batch's values.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

from etl_service.service.batch import BatchProcessor
from tests.unit.etl_builders import good, message
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer

DEVICE_ID = "6D92078A-8246-4BA4-AE5B-76104861E7DC"  # an IDFV's shape: its compact form is checked in the id
IP = "2001:DB8::7"  # not a canonical IPv4 address: its spellings are built whole (`ip_forms`)


def _function_caches() -> Iterator[tuple[str, dict[object, object]]]:
    """(name, cache dict) of every functools cache in the ETL's and the shared modules loaded."""
    for name, module in list(sys.modules.items()):
        if not name.startswith(("etl_service", "tokenvault_common")):
            continue
        for attribute, value in vars(module).items():
            if callable(value) and hasattr(value, "cache_info"):
                for referent in gc.get_referents(value):
                    if isinstance(referent, dict):
                        yield f"{name}.{attribute}", referent


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
    held = {
        name
        for name, cache in _function_caches()
        for entry in cache.items()
        for text in _strings(entry)
        if any(value in text.casefold() for value in (DEVICE_ID.casefold(), "6d92078a82464ba4", "2001:db8::7"))
    }
    assert not held, f"function caches holding a value of the batch: {sorted(held)}"
