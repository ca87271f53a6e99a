"""What one audit upkeep round costs a replica on a normal segment (review 17 #1: the round's reads in pages).

Two replicas' worth of reveal rows on one real PostgreSQL: replica A (the one measured) appends
`--rows` rows through the service's append and another log appends as many between them, as two
replicas serving the same load over one checkpoint interval do (`--alone`: A only, as one
replica serving alone, every row of the segment its own, so only links are read). Then A's round (`run_once`: the
head, the id sequence, the segment from A's oldest row to the head, a checkpoint) runs and its
wall time and this process's CPU time are taken. Repeated `--repeat` times on a growing log.

Only the public API of the round is used (`PostgresAuditLog`, `AuditUpkeep.run_once`), so the
same script measures any revision: `PYTHONPATH=<checkout> python -m bench.anchoring_round`.
It starts its own components and stops them. The last lines are `figure: <name> <value> <unit>`.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.report import Figures, print_figures
from devstack.stack import temporary_components
from tokenvault_common.migrations import migrate
from vault_service.adapters.postgres import PostgresAuditLog
from vault_service.bootstrap import open_vault_pool
from vault_service.domain.audit import AuditEvent
from vault_service.service.audit_upkeep import AuditUpkeep
from vault_service.service.metering import RefusalAuditor, TokenizeMeter

console = Console()


class _Signer:
    """A stand-in for the Transit signer: the round's database work is what is measured."""

    key_name = "bench"

    def sign(self, data: bytes) -> str:
        """Not a signature: the bench does not measure Transit."""
        return "bench:" + data.hex()[:16]


def _event(client: str, n: int) -> AuditEvent:
    return AuditEvent(client, "detokenize", "ok: 1 revealed, 0 refused", 1, f"INC-{n}", "ip", revealed=(b"\1" * 16,))


def _notes_to(path: Path) -> dict[str, Any]:
    """The upkeep's argument exporting its pending-rows notes to `path` (retest 17, finding A); none before them."""
    # checkpoint_anchor held the exporters before they had a module of their own; older revisions have none.
    for module in ("vault_service.service.checkpoint_export", "vault_service.service.checkpoint_anchor"):
        try:
            exporter = importlib.import_module(module).pending_exporter
        except (ImportError, AttributeError):
            continue
        return {"note_pending": exporter(path)}
    return {}


def main() -> None:
    """Append, run A's round, repeat; print the median round's wall and CPU time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows each replica appends before a round")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--alone", action="store_true", help="replica A serves alone: the segment holds only its own rows (links read)"
    )
    parser.add_argument("--no-notes", action="store_true", help="no note of the pending rows before each round")
    args = parser.parse_args()
    walls, cpus = [], []
    with temporary_components("tokenvault-round-") as stack, tempfile.TemporaryDirectory() as notes_dir:
        notes = Path(notes_dir) / "checkpoints.jsonl"
        migrate(stack.env["PG_ADMIN_DSN"])
        pool = open_vault_pool(stack.env["PG_VAULT_DSN"], 2)
        try:
            a, b = PostgresAuditLog(pool), PostgresAuditLog(pool)
            noted = {} if args.no_notes else _notes_to(notes)
            upkeep = AuditUpkeep(
                a, a, _Signer(), TokenizeMeter(), RefusalAuditor(a), lambda c: None, appended=a.appended, **noted
            )
            upkeep.run_once()
            for n in range(args.repeat):
                for i in range(args.rows):
                    a.append(_event("replica-a", i))
                    if not args.alone:
                        b.append(_event("replica-b", i))
                b.appended.forget(b.appended.remembered())
                wall, cpu = time.perf_counter(), time.process_time()
                upkeep.run_once()
                walls.append((time.perf_counter() - wall) * 1000)
                cpus.append((time.process_time() - cpu) * 1000)
                assert len(a.appended) == 0, "the round left rows unchecked"
                console.print(f"round {n + 1}: {walls[-1]:.1f} ms wall, {cpus[-1]:.1f} ms CPU")
        finally:
            pool.close()
        note_bytes = notes.stat().st_size / max(1, args.repeat) if notes.exists() else 0.0
    figures: Figures = {
        "round_wall_ms": (statistics.median(walls), "ms"),
        "round_cpu_ms": (statistics.median(cpus), "ms"),
        "segment_rows": ((1 if args.alone else 2) * args.rows, "rows"),
        "note_bytes_per_round": (note_bytes, "bytes"),
    }
    print_figures(console, "audit upkeep round", figures)


if __name__ == "__main__":
    main()
