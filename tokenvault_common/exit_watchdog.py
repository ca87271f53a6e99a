"""A bound on a service's exit once it has been told to stop, whatever a library does at shutdown.

A service's own shutdown is bounded (the ETL's grace period, the vault's in-flight calls), but
it runs on code that is not the service's: the standard library's waits, closing gRPC channels
and database pools, the interpreter joining threads and finalizing C extensions. One CI run saw
an idle ETL still alive 30 s after SIGTERM (CPython's SimpleQueue.get, interrupted by the signal
as its timeout ran out, waited for ever: etl_service/service/consumer.py). When such a thing
happens the platform kills the process at its own grace period, with nothing said about where
it stood; the stacks this prints found that one. `exit_within` arms faulthandler's watchdog:
if the process is still running when the bound passes, every thread's stack is written to
stderr and the process exits with status 1 - by then its work is settled or released (the
ETL's messages come back to the queue at their visibility timeout, nothing is lost).
"""

from __future__ import annotations

import faulthandler
import sys
import threading

_armed = threading.Lock()


def exit_within(seconds: float) -> None:
    """From the first call on, the process exits within `seconds` (status 1 and each thread's stack if it must)."""
    if not _armed.acquire(blocking=False):
        return  # a second SIGTERM does not move the bound
    faulthandler.dump_traceback_later(seconds, exit=True, file=sys.stderr)  # nothing logged: a signal handler calls it
