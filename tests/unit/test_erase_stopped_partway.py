"""`tokenvault erase --from-dead-letters` stopped by the erase limit: a NOT_FOUND token reads as on a full run.

Review 38, R38-4: the full run (cda9ec6, attack 38 O2) reports a token the vault no longer holds as "already erased
(or never stored)"; the run stopped part-way by the erase limit printed the same token `NOT_FOUND: ...`.
"""

from __future__ import annotations

import grpc
import pytest

from tokenvault_cli.erase_messages import ALREADY_ERASED, erase_stopped_partway
from tokenvault_client import ItemError, RateLimited

ERASED, GONE, UNSENT = "ip_" + "e" * 22, "dev_" + "g" * 22, "ip_" + "u" * 22


@pytest.mark.parametrize("from_dead_letters", [True, False])
def test_a_token_already_erased_reads_alike_when_the_limit_stops_the_run(
    from_dead_letters: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    stopped = RateLimited(grpc.StatusCode.RESOURCE_EXHAUSTED, "erase limit", 30.0)
    done = [None, ItemError(grpc.StatusCode.NOT_FOUND, "no such token")]
    with pytest.raises(SystemExit) as ended:
        erase_stopped_partway([ERASED, GONE, UNSENT], done, stopped, "csv", from_dead_letters)
    rows = dict(line.split(",", 1) for line in capsys.readouterr().out.splitlines()[1:])
    assert ended.value.code == 1 and rows[ERASED] == "erased" and rows[UNSENT] == "not sent: erase limit reached"
    assert rows[GONE] == (ALREADY_ERASED if from_dead_letters else "NOT_FOUND: no such token")
