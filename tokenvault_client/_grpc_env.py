"""gRPC's I/O engine for this process: reads and writes on the thread that waits for the call.

Imported first by `tokenvault_client` (and so by every process of the project), before gRPC
itself: gRPC reads GRPC_EXPERIMENTS once, when its core starts. Unless the environment already
sets GRPC_EXPERIMENTS (an operator's value wins), it turns off gRPC's EventEngine client and
listener (experiments in the pinned grpcio, on by default there), which go back to gRPC's
long-standing I/O manager.

Why: with EventEngine, every call's socket reads and writes run on EventEngine threads and the
result is handed to the thread waiting on the completion queue - measured on the 2-core VM at 4
concurrent single-token Detokenize calls, the bench client made 4.4 context switches per call
(0.2 without) and the vault service 25 (21.5 without), and each spent 5-15 % less CPU per call.
A process that imported grpc before tokenvault_client keeps gRPC's defaults (the variable is
read too early for this module to matter then).
"""

from __future__ import annotations

import os

GRPC_IO_EXPERIMENTS = "-event_engine_client,-event_engine_listener"
"""The value set when GRPC_EXPERIMENTS is unset."""

os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_IO_EXPERIMENTS)
