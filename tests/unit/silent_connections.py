"""For tests of key-less HTTP endpoints: does the server close a silent connection, and end its thread?

Used by test_etl_health_endpoint.py and test_metrics_plain_endpoint.py: a connection that sends
nothing must be closed by the server within its time limit, and the thread serving it must end.
"""

from __future__ import annotations

import socket
import threading
import time


def closed_by_server(connection: socket.socket, within: float) -> bool:
    """Whether the server closes `connection` (EOF or reset) within `within` seconds, without answering."""
    connection.settimeout(within)
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def threads_back_to(count: int, within: float) -> bool:
    """Whether this process is back to at most `count` threads within `within` seconds."""
    deadline = time.monotonic() + within
    while threading.active_count() > count and time.monotonic() < deadline:
        time.sleep(0.1)
    return threading.active_count() <= count
