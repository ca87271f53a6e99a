"""What migration 0033's CHECK on `vault.tokens.token_type` (0034's on its prefix, 0037's trigger) costs.

`python -m bench.known_type_check --sizes 1M,10M [--migration 0034]` starts its own OpenBao and PostgreSQL (the
embedded stack's components, all migrations applied), fills `vault.tokens` with SQL to each size
(bench.vault_statements' synthetic rows) and measures there:

- `migration`: the constraint dropped, then 0033's statements in one transaction as the migrator
  runs them (ADD CONSTRAINT ... NOT VALID, VALIDATE CONSTRAINT, commit): the wall-clock time,
  which is how long it holds its ACCESS EXCLUSIVE lock on vault.tokens (every Tokenize,
  Detokenize and Erase waits that long); the median of `--repeats`;
- `insert_checked` / `insert_unchecked`: PostgreSQL backend CPU per row of Tokenize's new-token
  insert (batches of 1000, in its transaction, as the service's role), with the constraint and
  without it, measured in alternating rounds in the same run (the machine is shared: only an
  A/B taken side by side compares).

Last lines: `figure: <name> <value> <unit>`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import psycopg
from rich.console import Console

from bench.report import Figures, print_figures
from bench.vault_scale import parse_size, size_label
from bench.vault_statements import cpu_us_per_row, fill
from devstack.stack import temporary_components

console = Console()
CONSTRAINTS = {
    "0033": ("tokens_known_type", "CHECK (token_type IN ('ip', 'device_id'))"),
    "0034": (
        "tokens_type_of_prefix",
        "CHECK ((token_type = 'ip' AND starts_with(token, 'ip_'))"
        " OR (token_type = 'device_id' AND starts_with(token, 'dev_')))",
    ),
}
"""Each migration's constraint on vault.tokens (`--migration`): its name and definition."""


TRIGGERS = {
    "0037": (
        "CREATE TRIGGER tokens_are_under_live_keys AFTER INSERT ON vault.tokens REFERENCING NEW TABLE AS added"
        " FOR EACH STATEMENT EXECUTE FUNCTION vault.tokens_under_live_keys()",
        "SELECT 1",
        "DROP TRIGGER IF EXISTS tokens_are_under_live_keys ON vault.tokens",
    ),
}
"""The statement trigger on the keys a new row names, as 0037 left it (0036's, renamed and rewritten): CREATE
(no scan), nothing to validate, DROP. 0036's own body is gone from a migrated database."""


def statements(migration: str) -> tuple[str, str, str]:
    """`migration`'s ADD ... NOT VALID, its VALIDATE, and the DROP that undoes them (0037: its trigger)."""
    if migration in TRIGGERS:
        return TRIGGERS[migration]
    name, check = CONSTRAINTS[migration]
    return (
        f"ALTER TABLE vault.tokens ADD CONSTRAINT {name} {check} NOT VALID",
        f"ALTER TABLE vault.tokens VALIDATE CONSTRAINT {name}",
        f"ALTER TABLE vault.tokens DROP CONSTRAINT IF EXISTS {name}",
    )


def migration_seconds(admin: psycopg.Connection, migration: str = "0033") -> float:
    """The migration's statements in one transaction, from a table without the constraint; the seconds it took."""
    add, validate, drop = statements(migration)
    admin.execute(drop)
    started = time.perf_counter()
    with admin.transaction():
        admin.execute(add)
        admin.execute(validate)
    return time.perf_counter() - started


def insert_a_b(
    admin: psycopg.Connection, dsn: str, stored: int, rounds: int, batches: int, migration: str = "0033"
) -> tuple[float, float]:
    """Median backend CPU µs per inserted row with the constraint and without, in alternating rounds."""
    add, _, drop = statements(migration)
    checked: list[float] = []
    unchecked: list[float] = []
    for round_number in range(rounds):
        for with_check in (True, False) if round_number % 2 == 0 else (False, True):
            admin.execute(drop)
            if with_check:
                admin.execute(add)
            (checked if with_check else unchecked).append(cpu_us_per_row(dsn, stored, "insert_plain", batches, 1))
    return statistics.median(checked), statistics.median(unchecked)


def run(sizes: list[int], repeats: int, rounds: int, batches: int, migration: str = "0033") -> Figures:
    """Fill to each size in turn and measure the migration and the insert there."""
    add, validate, drop = statements(migration)
    figures: Figures = {}
    with temporary_components("tokenvault-known-type-") as stack:
        dsn = stack.env["PG_ADMIN_DSN"]
        with psycopg.connect(dsn, autocommit=True) as admin:
            stored = 0
            for size in sizes:
                fill(admin, stored, size)
                stored = size
                admin.execute("VACUUM (ANALYZE) vault.tokens")
                label = size_label(size)
                seconds = [migration_seconds(admin, migration) for _ in range(repeats)]
                figures[f"migration_{migration}_{label}_lock_held"] = (statistics.median(seconds), "s")
                console.print(f"migration at {label}: {', '.join(f'{s:.3f}' for s in seconds)} s")
                checked, unchecked = insert_a_b(admin, dsn, stored, rounds, batches, migration)
                figures[f"insert_{label}_checked_pg_cpu_per_row"] = (checked, "us")
                figures[f"insert_{label}_unchecked_pg_cpu_per_row"] = (unchecked, "us")
                console.print(f"insert at {label}: checked {checked:.2f} us, unchecked {unchecked:.2f} us")
                admin.execute(drop)
                admin.execute(add)
                admin.execute(validate)
    return figures


def main() -> None:
    """Parse arguments, run, print the table and the figure lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1M", help="stored tokens at which to measure (filled by SQL)")
    parser.add_argument("--repeats", type=int, default=3, help="migration runs per size; the median is reported")
    parser.add_argument("--rounds", type=int, default=6, help="A/B insert rounds per size (alternating sides)")
    parser.add_argument("--batches", type=int, default=10, help="batches of 1000 per insert measurement")
    parser.add_argument("--migration", choices=sorted([*CONSTRAINTS, *TRIGGERS]), default="0033", help="whose check")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    figures = run(sizes, args.repeats, args.rounds, args.batches, args.migration)
    title = f"Migration {args.migration} (its check on vault.tokens), {os.cpu_count()} cores"
    print_figures(console, title, figures, value_header="median")


if __name__ == "__main__":
    main()
