"""Generate the `tokenvault_api` package from `protos/` (the one contract of both services).

Usage:
    python scripts/gen_protos.py            # regenerate in place
    python scripts/gen_protos.py --check    # exit 1 if the checked-in code is stale

Produces protobuf messages, gRPC stubs and mypy stubs (mypy-protobuf). Generated files are
never edited by hand; `make protos` runs this script and a test runs `--check`.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = "tokenvault_api"


def generate(out_dir: Path) -> list[Path]:
    """Compile every .proto under protos/ into `out_dir`; return the generated files."""
    protos = sorted(PROTO_ROOT.rglob("*.proto"))
    # The mypy plugins live next to this interpreter (the project venv), maybe not on PATH.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package_dir in [out_dir / PACKAGE, *(p for p in (out_dir / PACKAGE).rglob("*") if p.is_dir())]:
        if package_dir.name != "__pycache__":
            init = package_dir / "__init__.py"
            init.write_text('"""Generated from protos/ by scripts/gen_protos.py. Do not edit."""\n')
    return sorted(p for p in (out_dir / PACKAGE).rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def stale_files(generated_root: Path) -> list[str]:
    """Names of files that differ between `generated_root` and the checked-in package."""
    fresh = {p.relative_to(generated_root) for p in (generated_root / PACKAGE).rglob("*") if p.is_file()}
    current = {p.relative_to(ROOT) for p in (ROOT / PACKAGE).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    differing = {str(p) for p in fresh ^ current}
    for rel in fresh & current:
        if not filecmp.cmp(generated_root / rel, ROOT / rel, shallow=False):
            differing.add(str(rel))
    return sorted(differing)


def main() -> int:
    """Regenerate the package, or with --check report whether it is stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        if args.check:
            stale = stale_files(Path(tmp))
            if stale:
                print("generated code is stale; run `make protos`:", *stale, sep="\n  ")
                return 1
            print("generated code is fresh")
            return 0
        shutil.rmtree(ROOT / PACKAGE, ignore_errors=True)
        shutil.copytree(Path(tmp) / PACKAGE, ROOT / PACKAGE)
    print(f"generated {PACKAGE}/ from protos/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
