"""`docker compose` on the test's engine, with the stand-ins, and what a failed step shows.

On a failure the step prints `docker compose ps` and the compose logs of the services it names
and of every service that is neither running healthy nor exited 0 (never PII: the services log
none, and the values the analyst sees are compared, not printed).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.compose.engine import DOCKER_CLI, Engine

REPO = Path(__file__).resolve().parents[2]
TEST_FILE = Path(__file__).resolve().parent / "docker-compose.test.yml"


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


class ComposeError(AssertionError):
    """A compose command failed; the message carries its output."""


@dataclass
class Compose:
    """The stack of docker-compose.yml (+ the stand-ins) on our engine, with our .env."""

    engine: Engine
    env_file: Path

    def command(self, *args: str) -> list[str]:
        return [
            DOCKER_CLI,
            "compose",
            "--project-directory",
            str(REPO),
            "--env-file",
            str(self.env_file),
            "-f",
            str(REPO / "docker-compose.yml"),
            "-f",
            str(TEST_FILE),
            *args,
        ]

    def run(
        self, *args: str, check: bool = True, timeout: float = 300, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`docker compose ARGS`; raises ComposeError (with the failing service's logs) when it fails."""
        result = subprocess.run(
            self.command(*args),
            env=self.engine.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            named = re.findall(r'service "([^"]+)"', result.stderr) + re.findall(
                r"container [\w-]+?-([a-z-]+)-\d+ ", result.stderr
            )
            raise ComposeError(
                f"docker compose {' '.join(args)} failed ({result.returncode}):\n{_tail(result.stderr, 12)}"
                + self.diagnosis(named)
            )
        return result

    def sql(self, query: str) -> list[list[str]]:
        """Rows of `query`, run by psql as the admin inside the postgres container."""
        out = self.run(
            "exec", "-T", "postgres", "psql", "-U", "tokenvault_admin", "-d", "tokenvault", "-tAF", "\t", "-c", query
        ).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def states(self) -> dict[str, dict[str, str | int]]:
        """`docker compose ps -a` by service: State, Health, ExitCode."""
        out = self.run("ps", "-a", "--format", "json", check=False).stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
        return {row["Service"]: row for row in rows}

    def troubled(self) -> list[str]:
        """Services neither running (and healthy, when they have a health check) nor exited 0."""
        found = []
        for name, row in self.states().items():
            running_ok = row["State"] == "running" and row.get("Health") in ("", "healthy", None)
            done_ok = row["State"] == "exited" and row.get("ExitCode") == 0
            if not (running_ok or done_ok):
                found.append(name)
        return found

    def diagnosis(self, services: Sequence[str] = ()) -> str:
        """`ps` and the logs of `services` and of every troubled service."""
        names = list(dict.fromkeys([*services, *self.troubled()]))
        ps = self.run("ps", "-a", check=False).stdout
        parts = [f"\n--- docker compose ps -a ---\n{ps}"]
        for name in names:
            logs = self.run("logs", "--no-color", "--tail", "150", name, check=False)
            parts.append(f"--- docker compose logs {name} (last 150 lines) ---\n{logs.stdout}{logs.stderr}")
        return "\n".join(parts)

    @contextmanager
    def step(self, *services: str) -> Iterator[None]:
        """On any failure inside, fail with the compose logs of `services` and of troubled ones."""
        try:
            yield
        except ComposeError:
            raise
        except Exception as error:
            raise ComposeError(f"{type(error).__name__}: {error}{self.diagnosis(list(services))}") from error


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` until true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")
