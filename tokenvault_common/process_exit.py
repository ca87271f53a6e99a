"""How a service process ends: at once when its work is done, and within a bound once told to stop.

A service's own shutdown is bounded (the ETL's grace period, the vault's in-flight calls), but
what follows is not the service's code: the interpreter joining threads and finalizing C
extensions (gRPC's core waits for its own threads at exit). One CI run saw an idle ETL still
alive 30 s after SIGTERM, with nothing showing where it stood; the platform would have killed
it at its own grace period, silently.

- `exit_now(status)`: once the service has settled its work and closed its pools, flush what it
  wrote and end the process (os._exit): the interpreter's teardown holds nothing the service
  needs (no atexit handler of ours; sockets are closed by the kernel).
- `exit_within(seconds)`, armed by the first stop signal: faulthandler's watchdog - still running
  when the bound passes, every thread's stack goes to stderr and the process exits with status 1.
  By then its work is settled or released (the ETL's messages come back to the queue at their
  visibility timeout): nothing is lost, and the stacks say what hung.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import sys
import threading

_armed = threading.Lock()


def exit_within(seconds: float) -> None:
    """From the first call on, the process exits within `seconds` (status 1 and each thread's stack if it must)."""
    if not _armed.acquire(blocking=False):
        return  # a second SIGTERM does not move the bound
    faulthandler.dump_traceback_later(seconds, exit=True, file=sys.stderr)  # nothing logged: a signal handler calls it


def exit_now(status: int) -> None:
    """Flush the log handlers, stdout and stderr, then end the process with `status` (no interpreter teardown)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or its reader gone: nothing more can be said there
            stream.flush()
    os._exit(status)
