"""The ETL's TLS probe connects from a socket whose descriptor is 1024 or more (review 51, R51-7).

Its wait for a non-blocking connect used select.select, which raises ValueError for such a descriptor: the probe
then said "an outage" without connecting at all. Here every descriptor below 1024 is held open (the soft limit
raised for the test if need be), so the probe's socket gets one above, and it connects to a local listener.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import threading
from collections.abc import Iterator

from etl_service.adapters.vault_tls_probe import _connected

SELECT_LIMIT = 1024
"""select.select's FD_SETSIZE: no descriptor of this number or more."""


@contextlib.contextmanager
def _descriptors_below_held(limit: int) -> Iterator[None]:
    """Every descriptor below `limit` open while inside (copies of /dev/null), so the next one is `limit` or more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limit + 64
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    held = [os.open(os.devnull, os.O_RDONLY)]
    try:
        while held[-1] < limit - 1:  # os.dup answers the lowest free descriptor
            held.append(os.dup(held[0]))
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_probe_connects_from_a_descriptor_select_cannot_watch() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with _descriptors_below_held(SELECT_LIMIT), _connected("127.0.0.1", port, 2.0, threading.Event()) as probe:
            assert probe.fileno() >= SELECT_LIMIT
            assert probe.getpeername() == ("127.0.0.1", port)
