"""Every key command's --help says whose certificate asks it, and what --reason may hold (walk 53, W53-2).

`status`, `reencrypt`, `reindex` said "the security team's client certificate (`--as security` on the
embedded stack)"; `rewrap`, `rotate-encryption-key`, `rotate-fingerprint-key` and `retire-kek-versions` did
not, and --reason said "a reference such as CHG-1234" without the form the vault refuses others by.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tokenvault_cli.app import cli

KEY_COMMANDS = (
    "status",
    "rewrap",
    "rotate-encryption-key",
    "rotate-fingerprint-key",
    "retire-kek-versions",
    "reencrypt",
    "reindex",
)


def _help(command: str) -> str:
    result = CliRunner().invoke(cli, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize("command", KEY_COMMANDS)
def test_each_key_command_names_the_security_teams_certificate(command: str) -> None:
    said = _help(command)
    assert "the security team's client certificate (`--as security` on the embedded stack)" in said, said


@pytest.mark.parametrize("command", [c for c in KEY_COMMANDS if c != "status"])
def test_each_change_says_the_form_of_its_reason(command: str) -> None:
    said = _help(command)
    assert "letters and digits in groups joined by - _ / . : #" in said and "never personal data" in said, said
