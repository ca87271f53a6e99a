"""`dead-letters list | head` ends quietly, exit 1, as `tokenvault` does in a pipe (walk48, W48-5).

Before, the reader going away (`head`, `awk '... exit'`) ended `python -m etl_service dead-letters list`
in a BrokenPipeError traceback through runpy - a person reads that as the command failing on the DLQ.
A real process with its standard output a pipe closed early; the DLQ's listing is a fake (no SQS).
Review 49, R49-7: a command that changes the DLQ (erase here) says on stderr that it stopped part-way.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

LISTS_FOR_EVER = """
import sys
from etl_service.entrypoints import dead_letters
dead_letters.DeadLetterSweep.check = lambda self: None
dead_letters.DeadLetterSweep.release = lambda self: None
dead_letters._checked_vault_access = lambda args: None

def listing(args, dlq, access):
    while True:
        print("00000000-0000-0000-0000-000000000000  missing_field  evt-1  sealed")

dead_letters._run = listing
dead_letters._erase = lambda args, dlq, pair, access: listing(args, dlq, access)
sys.exit(dead_letters.main(sys.argv[1:]))
"""


def _closed_early(*command: str) -> tuple[int, str]:
    """Run `dead-letters COMMAND` with its stdout read for one line, then closed (`| head -1`): (exit, stderr)."""
    env = {"ETL_QUEUE_URL": "http://127.0.0.1:9/000000000000/q-w48", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [sys.executable, "-c", LISTS_FOR_EVER, *command],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as run:
        assert run.stdout is not None and run.stderr is not None
        assert run.stdout.readline().startswith(b"00000000-")
        run.stdout.close()  # `| head -1`
        err = run.stderr.read().decode()
        code = run.wait(timeout=30)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    return code, err


def test_a_reader_that_goes_away_ends_the_listing_quietly_with_exit_1() -> None:
    code, err = _closed_early("list")
    assert code == 1, (code, err)
    assert "stopped" not in err, err


def test_a_reader_that_goes_away_mid_erase_is_told_on_stderr_the_erasure_stopped_part_way() -> None:
    code, err = _closed_early("erase", "-", "--yes")
    assert code == 1, (code, err)
    assert "etl_service dead-letters erase: stopped part-way: the reader of its output went away" in err, err
