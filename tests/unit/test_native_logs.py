"""Every line a service writes to stderr is JSON with an ISO-8601 UTC time, native lines included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta

SCRIPT = """
import logging, os, time
from tokenvault_common.logging_setup import configure_logging
configure_logging("etl_service", "INFO", native=True)
logging.getLogger("etl_service").info("from python", extra={"messages": 3})
os.write(2, b"E1202 11:32:30.871883   22529 ssl_transport_security.cc:2563] Handshake failed\\n")
os.write(2, b"some other native line\\n")
import grpc
grpc.insecure_channel("127.0.0.1:1").close()
time.sleep(0.3)  # the relay thread logs what reached the pipe
"""


def test_native_stderr_lines_become_json_records_with_utc_times() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True)
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert all(datetime.fromisoformat(line["time"]).utcoffset() == timedelta(0) for line in lines)
    by_message = {line["message"]: line for line in lines}
    assert by_message["from python"]["messages"] == 3
    handshake = by_message["Handshake failed"]
    assert (handshake["logger"], handshake["level"], handshake["source"]) == (
        "grpc.core",
        "ERROR",
        "ssl_transport_security.cc:2563",
    )
    assert by_message["some other native line"]["level"] == "WARNING"


HANGS = """
import os, signal, threading
from tokenvault_common.logging_setup import configure_logging
configure_logging("etl_service", "INFO", native=True)
def stuck_in_shutdown():
    threading.Event().wait()
threading.Thread(target=stuck_in_shutdown, name="stuck", daemon=True).start()
os.kill(os.getpid(), signal.SIGABRT)
"""


def test_with_pythonfaulthandler_a_fatal_signal_shows_each_threads_stack_on_the_real_stderr() -> None:
    """How a hung service is diagnosed (`kill -ABRT`): the stacks must not vanish into the native-log pipe."""
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    result = subprocess.run([sys.executable, "-c", HANGS], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == -signal.SIGABRT
    assert "Fatal Python error: Aborted" in result.stderr
    assert "in stuck_in_shutdown" in result.stderr
