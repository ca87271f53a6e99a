"""Transit batch requests bounded by item count and by bytes, under the OpenBao listener's request bound.

OpenBao refuses a request body over its listener's max_request_size with HTTP 413, as a whole:
130 claims of 250 kB in one rewrap failed every claim of a take-back's listing or a source batch,
so the drain never ended (attack 14, finding 2). The project's listeners are bounded at 2 MiB
(devstack/openbao.py, deploy/compose/vault-server.hcl; docs/production.md asks the same of
production's), as OpenBao decodes a request before it checks the token (attack 22, F2). Every
batch the ETL sends to Transit (encrypt, rewrap, verify, hmac) is cut here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

MAX_BATCH = 250
"""Items per request: OpenBao's listener refuses a body of over 1000 JSON strings (max_request_json_strings)."""
MAX_REQUEST_BYTES = 1024 * 1024
"""The most JSON of items one batch request carries, half the listeners' 2 MiB bound: the rest is the
request's few bytes of envelope, and room for a single item over this, which goes alone (an item is
at most an SQS message's 256 KiB, as Transit's base64 of JSON-escaped text: ~1 MiB)."""


def request_chunks(items: Sequence[dict[str, str]]) -> Iterator[Sequence[dict[str, str]]]:
    """`items` in consecutive chunks of at most MAX_BATCH items and MAX_REQUEST_BYTES of JSON; a larger item alone.

    Each item is measured as `requests` encodes it (json.dumps: non-ASCII escaped).
    """
    start, size = 0, 0
    for index, item in enumerate(items):
        item_bytes = len(json.dumps(item)) + 2  # ", " between items
        if index > start and (index - start >= MAX_BATCH or size + item_bytes > MAX_REQUEST_BYTES):
            yield items[start:index]
            start, size = index, 0
        size += item_bytes
    if start < len(items):
        yield items[start:]
