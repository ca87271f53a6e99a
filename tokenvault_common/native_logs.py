"""gRPC's own log lines (written by its C core straight to file descriptor 2) as JSON log records.

gRPC's core logs in glog's format (`I1202 11:32:30.871883 22529 ssl_transport_security.cc:2563]
Handshake failed ...`) directly to fd 2, past Python's logging. `route_native_stderr()` points
fd 2 at a pipe, keeps Python's own `sys.stderr` on the real stderr, and a thread turns each line
arriving on the pipe into a record of logger `grpc.core` (level from the glog letter, `source`
= file:line), so every line the process writes is JSON.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import re
import sys
import threading

_GLOG = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]\s]+)\] ?(.*)$")
_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
_routed = False


def route_native_stderr(logger_name: str = "grpc.core") -> None:
    """Capture what native code writes to fd 2 and log it as records of `logger_name` (once per process)."""
    global _routed
    if _routed:
        return
    _routed = True
    real_stderr = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = open(real_stderr, "w", buffering=1, encoding="utf-8", errors="replace", closefd=True)  # noqa: SIM115
    if faulthandler.is_enabled():  # PYTHONFAULTHANDLER: a fatal signal's stacks to the real stderr, not the pipe
        faulthandler.enable(sys.stderr)
    logger = logging.getLogger(logger_name)
    threading.Thread(target=_relay, args=(read_end, logger), name="native-stderr", daemon=True).start()


def _relay(read_end: int, logger: logging.Logger) -> None:
    with open(read_end, encoding="utf-8", errors="replace") as pipe:
        for line in pipe:
            text = line.rstrip("\n")
            if not text:
                continue
            match = _GLOG.match(text)
            if match:
                letter, source, message = match.groups()
                logger.log(_LEVELS[letter], message, extra={"source": source})
            else:
                logger.warning(text, extra={"source": "stderr"})
