"""`python -m etl_service --help` documents every setting the ETL reads."""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_help_names_every_environment_variable_the_config_reads_and_the_exit_codes() -> None:
    source = (REPO / "etl_service" / "config.py").read_text()
    read = set(re.findall(r'read\.\w+\("([A-Z_]+)"', source)) | set(re.findall(r'env\.get\("([A-Z_]+)"', source))
    assert len(read) > 20
    result = subprocess.run(
        [sys.executable, "-m", "etl_service", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    missing = sorted(name for name in read if name not in result.stdout)
    assert missing == []
    assert "exit status:" in result.stdout and "dead-letters" in result.stdout


def _help() -> str:
    return subprocess.run(
        [sys.executable, "-m", "etl_service", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout


def test_help_names_settings_by_their_variables_never_by_the_config_fields() -> None:
    """An operator sets environment variables; a field name such as metrics_plaintext_allowed is nothing to set."""
    from etl_service.config import EtlConfig

    shown = _help()
    fields = [f.name for f in dataclasses.fields(EtlConfig) if "_" in f.name]
    assert [name for name in fields if re.search(rf"\b{name}\b", shown)] == []


def test_help_lists_every_dead_letters_command() -> None:
    from etl_service.entrypoints import dead_letters

    commands = next(
        action.choices
        for action in dead_letters._parser()._actions
        if isinstance(action, argparse._SubParsersAction)  # argparse keeps the subcommands there
    )
    operators = next(line for line in _help().splitlines() if line.startswith("operators:"))
    assert [name for name in commands if name not in operators] == []


def test_each_dead_letters_command_has_help_of_its_own_with_the_exit_status() -> None:
    """`dead-letters list --help` and the rest said nothing of what the command does or how it exits."""
    from etl_service.entrypoints import dead_letters

    commands = next(
        action.choices
        for action in dead_letters._parser()._actions
        if isinstance(action, argparse._SubParsersAction)  # argparse keeps the subcommands there
    )
    first_words = {
        "list": "every dead letter with its reason",
        "show": "open one sealed body",
        "resend": "send the fixed body",
        "redrive": "take back messages SQS's redrive policy moved",
        "delete": "remove one dead letter without opening it",
        "erase": "Part of an erasure",
    }
    for name, parser in commands.items():
        shown = " ".join(parser.format_help().split())
        assert first_words[name] in shown, (name, shown)
        assert "Exit status: 0 done" in shown or name == "erase", (name, shown)


def test_the_dead_letter_commands_start_without_importing_the_services_dependencies() -> None:
    """The DLQ operator's commands need no gRPC, Postgres or progress display: importing them cost ~0.4 s a command."""
    run_as_main = (
        "import runpy, sys\n"
        "sys.argv = ['etl_service', 'dead-letters', '--help']\n"
        "try:\n"
        "    runpy.run_module('etl_service', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "print(sorted(name for name in ('grpc', 'psycopg', 'psycopg_pool', 'rich') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", run_as_main], cwd=REPO, capture_output=True, text=True, check=True)
    assert "dead-letters" in result.stdout and result.stdout.splitlines()[-1] == "[]", result.stdout[-500:]
