"""`tokenvault erase --from-dead-letters` stopped by the erase limit: a NOT_FOUND token reads as on a full run.

Review 38, R38-4: the full run (cda9ec6, attack 38 O2) reports a token the vault no longer holds as "already erased
(or never stored)"; the run stopped part-way by the erase limit printed the same token `NOT_FOUND: ...`.
Attack 39, P2: only a NOT_FOUND the vault says was erased before counts as done; one it never issued does not.
"""

from __future__ import annotations

import grpc
import pytest

from tokenvault_cli.erase_messages import ALREADY_ERASED, erase_stopped_partway
from tokenvault_client import ItemError, RateLimited
from tokenvault_common.erase_outcomes import ERASED_BEFORE, NEVER_ISSUED

ERASED, GONE, TYPO, UNSENT = "ip_" + "e" * 22, "dev_" + "g" * 22, "dev_" + "t" * 22, "ip_" + "u" * 22


@pytest.mark.parametrize("from_dead_letters", [True, False])
def test_a_token_already_erased_reads_alike_when_the_limit_stops_the_run(
    from_dead_letters: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    stopped = RateLimited(grpc.StatusCode.RESOURCE_EXHAUSTED, "erase limit", 30.0)
    found = grpc.StatusCode.NOT_FOUND
    done = [None, ItemError(found, ERASED_BEFORE), ItemError(found, NEVER_ISSUED)]
    with pytest.raises(SystemExit) as ended:
        erase_stopped_partway([ERASED, GONE, TYPO, UNSENT], done, stopped, "csv", from_dead_letters)
    captured = capsys.readouterr()
    rows = dict(line.split(",", 1) for line in captured.out.splitlines()[1:])
    assert ended.value.code == 1 and rows[ERASED] == "erased" and rows[UNSENT] == "not sent: erase limit reached"
    assert rows[GONE] == (ALREADY_ERASED if from_dead_letters else f"NOT_FOUND: {ERASED_BEFORE}")
    assert rows[TYPO] == f"NOT_FOUND: {NEVER_ISSUED}"  # never done, with the flag or without (attack 39, P2)
    assert ("the vault never issued them" in captured.err) == from_dead_letters


@pytest.mark.parametrize("person", [(), ("u-1",)])
def test_with_user_id_the_rest_is_sent_naming_what_was_erased_with_leaving_out(
    person: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """Attack 50, A50-1: `erase --user-id` refuses a token of the person's rows neither given nor left out, so the
    rest of a run the limit stopped is sent with the tokens erased before named (--leaving-out)."""
    stopped = RateLimited(grpc.StatusCode.RESOURCE_EXHAUSTED, "erase limit", 30.0)
    with pytest.raises(SystemExit):
        erase_stopped_partway([ERASED, UNSENT], [None], stopped, "csv", False, person)
    err = capsys.readouterr().err
    assert (f"add to that command: --leaving-out {ERASED} (" in err) == bool(person), err
    assert f"--leaving-out {UNSENT}" not in err
