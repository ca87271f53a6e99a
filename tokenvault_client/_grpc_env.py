"""gRPC's I/O engine for this process: reads and writes on the thread that waits for the call.

Imported first by `tokenvault_client` (and so by every process of the project), before gRPC
itself: gRPC reads GRPC_EXPERIMENTS once, when its core starts. Unless the environment already
sets GRPC_EXPERIMENTS (an operator's value wins), it turns off gRPC's EventEngine client and
listener (experiments in the pinned grpcio, on by default there), which go back to gRPC's
long-standing I/O manager.

Why: with EventEngine, every call's socket reads and writes run on EventEngine threads and the
result is handed to the thread waiting on the completion queue. Counted per call from /proc at 4
concurrent single-token Detokenize calls on the 2-core VM: the bench client made 4.4 context
switches per call with EventEngine and 0.2 without, the vault service 24-27 and 19-22. In a
round-robin A/B (two runs of 6,000 calls per variant, turns taken in bursts) CPU per call was
the same either way and the tail a little shorter without (p99 10.0/12.2 ms against 11.3/12.9,
p99.5 11.1/14.6 against 15.6/16.2, three stacks on the machine at once).
A process that imported grpc before tokenvault_client keeps gRPC's defaults (the variable is
read too early for this module to matter then).
"""

from __future__ import annotations

import os

GRPC_IO_EXPERIMENTS = "-event_engine_client,-event_engine_listener"
"""The value set when GRPC_EXPERIMENTS is unset."""

os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_IO_EXPERIMENTS)
