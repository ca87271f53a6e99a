"""`audit who-saw` refuses an argument that is not a token instead of answering "0 reveal(s)".

A token mistyped or cut short when copied (or a value given in place of its token) was looked
for, found nowhere, and reported as "0 reveal(s) and 0 erasure(s) of this token" with exit 0: to
the privacy officer, nobody had seen the person's data (documentation walk, 4 December). Now it
stops with exit 2 before anything is read, without repeating the argument (it may be a value).
Against real Postgres and OpenBao, run as the security team runs it.
"""

from __future__ import annotations

import pytest

from tests.conftest import RunningVault
from tests.integration.vault_start import run_admin


@pytest.mark.parametrize("argument", ["ip_U95GZm6eg1saZraaswvG9", "notatoken", "203.0.113.7", "dev_" + "x" * 30])
def test_who_saw_of_what_is_not_a_token_is_refused(
    stack_env: dict[str, str], vault: RunningVault, argument: str
) -> None:
    done = run_admin(stack_env, "who-saw", argument)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "reveal(s)" not in done.stdout and "intact" not in done.stdout, done.stdout
    assert "is not a token" in done.stderr and argument not in done.stderr, done.stderr


def test_who_saw_of_a_token_never_revealed_answers_none(stack_env: dict[str, str], vault: RunningVault) -> None:
    vault.wait_for_checkpoint()
    done = run_admin(stack_env, "who-saw", "ip_" + "Q" * 22)
    assert done.returncode == 0, done.stderr
    assert "0 reveal(s) and 0 erasure(s) of this token" in done.stdout, done.stdout
