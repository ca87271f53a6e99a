"""Runs the real ETL in drain mode and ends its own process abruptly right after one step.

`python -m tests.integration.etl_crash_driver STEP` with the ETL environment set. The process
dies through os._exit (no cleanup, no finally, no release: what SIGKILL or a power cut leaves)
right after the first time STEP completes. Exit code CRASHED proves the crash happened.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from etl_service.adapters import postgres
from etl_service.bootstrap import bootstrap
from etl_service.config import EtlConfig

CRASHED = 86
STEPS = ("after_receive", "after_tokenize", "inside_load", "after_commit", "after_dead_letter", "after_delete")
"""`inside_load`: after the COPY into user_logins, before its transaction commits (chaos 49)."""


def _die_after(call: Callable[..., Any], only_if: Callable[[Any], bool] = lambda _: True) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = call(*args, **kwargs)
        if only_if(result):
            os._exit(CRASHED)
        return result

    return wrapped


def main() -> int:
    """Wire the ETL, arm the crash, drain."""
    step = sys.argv[1]
    if step not in STEPS:
        print(f"step must be one of {', '.join(STEPS)}", file=sys.stderr)
        return 2
    wired = bootstrap(EtlConfig.from_env(os.environ), wait_seconds=1)
    queue, tokenizer, store = wired.queue, wired.tokenizer, wired.store
    if step == "after_receive":
        queue.receive = _die_after(queue.receive, only_if=bool)  # type: ignore[method-assign]
    elif step == "after_tokenize":
        tokenizer.tokenize = _die_after(tokenizer.tokenize)  # type: ignore[method-assign]
    elif step == "inside_load":
        postgres._copy_rows = _die_after(postgres._copy_rows)
    elif step == "after_commit":
        store.write = _die_after(store.write)  # type: ignore[method-assign]
    elif step == "after_dead_letter":
        queue.dead_letter = _die_after(queue.dead_letter)  # type: ignore[method-assign]
    else:
        queue.delete = _die_after(queue.delete)  # type: ignore[method-assign]
    wired.consumer.drain()
    return 3  # the step never ran


if __name__ == "__main__":
    sys.exit(main())
