"""A benchmark of this tree beside the same benchmark of an earlier revision, in one run.

    python -m bench.compare_revisions --baseline 7a1d319 --bench vault --rounds 3

Checks the baseline out into a temporary worktree with its own virtual environment, then runs
`python -m bench.<bench>_bench` alternately in the baseline and in this tree (baseline first),
so both see the same machine at nearly the same time. Prints the median of each `figure:` line
per side, the ratio current/baseline, and `figure: <name>_ratio <x>` lines.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
console = Console()


def _figures(output: str) -> dict[str, tuple[float, str]]:
    figures = {}
    for line in output.splitlines():
        if line.startswith("figure: "):
            name, value, *unit = line.removeprefix("figure: ").split()
            figures[name] = (float(value), " ".join(unit))
    return figures


def _run(tree: Path, bench: str, args: list[str]) -> dict[str, tuple[float, str]]:
    result = subprocess.run(
        [str(tree / ".venv/bin/python"), "-m", f"bench.{bench}_bench", *args],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"bench in {tree} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return _figures(result.stdout)


def main() -> int:
    """Parse, prepare the baseline, alternate the runs, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare with (e.g. HEAD~3, a commit id)")
    parser.add_argument("--bench", choices=("vault", "etl"), default="vault")
    parser.add_argument("--rounds", type=int, default=2, help="runs per side, alternating")
    parser.add_argument("bench_args", nargs="*", help="arguments for the benchmark (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tokenvault-baseline-") as scratch:
        Path(scratch).chmod(0o755)  # PostgreSQL runs as an unprivileged user and starts in the baseline tree
        baseline = Path(scratch) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(baseline), args.baseline], cwd=REPO, check=True)
        try:
            subprocess.run(["make", "install"], cwd=baseline, check=True, capture_output=True)
            runs: dict[str, dict[str, list[float]]] = {"baseline": defaultdict(list), "current": defaultdict(list)}
            units: dict[str, str] = {}
            for round_number in range(args.rounds):
                for side, tree in (("baseline", baseline), ("current", REPO)):
                    console.print(f"round {round_number + 1}/{args.rounds}: {side}")
                    for name, (value, unit) in _run(tree, args.bench, args.bench_args).items():
                        runs[side][name].append(value)
                        units[name] = unit
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=REPO, check=False)
    table = Table("figure", f"baseline {args.baseline}", "current", "unit", "current/baseline")
    ratios = {}
    for name in units:
        base, now = runs["baseline"].get(name), runs["current"].get(name)
        if not base or not now:
            continue
        b, c = statistics.median(base), statistics.median(now)
        ratios[name] = c / b if b else float("nan")
        table.add_row(name, f"{b:,.2f}", f"{c:,.2f}", units[name], f"{ratios[name]:.2f}x")
    console.print(table)
    for name, ratio in ratios.items():
        print(f"figure: {name}_ratio {ratio:.3f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
