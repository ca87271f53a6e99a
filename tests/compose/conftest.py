"""The compose test's stack: our own engine, images built here, the stack from docker-compose.yml.

Everything is started by the fixture and stopped at the end: `docker compose down -v`, then
our dockerd by its PID. Images stay in the engine's data root, so a later run reuses the base
image (made by mmdebstrap) and the build cache. The figures measured (build times, image
sizes, time to `up --wait`) are printed as `figure:` lines at the end of the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.compose.engine import Engine, install_missing_packages, start_engine
from tests.compose.images import STANDIN_IMAGES, base_image, image_size_mb, project_image, sqs_image, standin_image
from tests.compose.stack import REPO, Compose

STATE_DIR = Path(os.environ.get("TOKENVAULT_COMPOSE_TEST_DIR", "/var/lib/tokenvault-compose-test"))
FIGURES: dict[str, str] = {}


def figure(name: str, value: str) -> None:
    """Record a measured figure for the summary."""
    FIGURES[name] = value


class Timer:
    """Wall-clock seconds since creation."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start


@pytest.fixture(scope="session")
def compose() -> Iterator[Compose]:
    """The stack's Compose handle, on an engine of our own with images built here."""
    timer = Timer()
    installed = install_missing_packages()
    if installed:
        figure(f"apt-get install {' '.join(installed)}", f"{timer.seconds:.0f} s")
    engine = start_engine(STATE_DIR)
    env_file = STATE_DIR / "compose.env"
    env_file.unlink(missing_ok=True)
    subprocess.run([sys.executable, str(REPO / "deploy/compose/make-env.py"), str(env_file)], check=True)
    stack = Compose(engine, env_file)
    try:
        stack.run("down", "-v", "--remove-orphans", check=False)
        timer = Timer()
        base = base_image(engine)
        figure("base image ready (mmdebstrap + import, or reused)", f"{timer.seconds:.0f} s")
        tags = build_in_parallel(
            {
                "project image from Dockerfile": lambda: project_image(engine, base),
                "SQS emulator image": lambda: sqs_image(engine, base),
                **{f"stand-in {name}": _standin(engine, name, base) for name in STANDIN_IMAGES},
            }
        )
        for tag in (base, *tags):
            figure(f"image size {tag.split(':')[0]}", f"{image_size_mb(engine, tag):.0f} MB")
        yield stack
    finally:
        stack.run("down", "-v", "--remove-orphans", check=False, timeout=120)
        engine.stop()


def _standin(engine: Engine, name: str, base: str) -> Callable[[], str]:
    return lambda: standin_image(engine, name, base)


def build_in_parallel(builds: dict[str, Callable[[], str]]) -> list[str]:
    """Run the builds at once (mostly downloads: they overlap well on 2 cores); their tags."""
    timer = Timer()
    with ThreadPoolExecutor(max_workers=len(builds)) as pool:
        started = {name: pool.submit(build) for name, build in builds.items()}
        tags = [future.result() for future in started.values()]
    figure("images built in parallel (project, SQS emulator, 2 stand-ins)", f"{timer.seconds:.0f} s")
    return tags


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures measured."""
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"figure: {name}: {value}")
