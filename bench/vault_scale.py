"""The vault's cost as it grows: filled through its own API to 10 million tokens, measured on the way.

`make bench-vault-scale` (or `python -m bench.vault_scale`) starts its own OpenBao, PostgreSQL
and vault service, as `make bench-vault` does. At each size in `--sizes` it measures, `--repeats`
times each (medians reported):

- new tokens/s: `--sample` values never tokenized before (they stay, and count toward the size);
- repeated values/s with the cache cold: the vault service is restarted first, then values
  stored at random positions of everything issued so far are tokenized again;
- batched Detokenize values/s: the tokens of those values, in that random order;
- single-token Detokenize p50/p99 from `--clients` callers at once;
- the size on disk of `vault.tokens` and each of its indexes, and bytes per token.

Between sizes it fills the vault with fresh values, printing the new-token rate per million.
The last lines are `figure: <name> <value> <unit>` (names carry the size, e.g.
`scale_10M_tokenize_new_per_s`), then the ratios of the largest size to the first.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
from rich.console import Console
from rich.table import Table

from bench.cpu_time import CostMeter
from bench.huge_pages import add_huge_pages_option, huge_pages_figure
from bench.report import Figures, print_figures
from bench.vault_bench import VaultBench, ips, percentile, start_bench_vault
from devstack.procs import stop_pid
from devstack.stack import TemporaryStack, temporary_components

console = Console(width=200)
FILL_CHUNK = 100_000

_SIZES_SQL = """
SELECT c.relname, pg_relation_size(c.oid)
FROM pg_class c
WHERE c.oid = 'vault.tokens'::regclass
   OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'vault.tokens'::regclass)
ORDER BY c.relname
"""


def parse_size(text: str) -> int:
    """'0', '250k', '1M', '10M' or a plain number."""
    text = text.strip()
    scale = {"k": 1_000, "K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def size_label(count: int) -> str:
    """1000000 -> '1M', 250000 -> '250k'."""
    if count >= 1_000_000 and count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    if count >= 1_000 and count % 1_000 == 0:
        return f"{count // 1_000}k"
    return str(count)


@dataclass
class AtSize:
    """What was measured at one size."""

    stored: int
    samples: dict[str, list[float]] = field(default_factory=dict)
    relation_bytes: dict[str, int] = field(default_factory=dict)
    index_fill: dict[str, float] = field(default_factory=dict)

    def median(self, name: str) -> float:
        """Median of one figure's repeats."""
        return statistics.median(self.samples[name])


class ScaleRun:
    """One vault service on temporary components, filled value by value through its API."""

    def __init__(self, stack: TemporaryStack, clients: int, sample: int, repeats: int) -> None:
        self._stack = stack
        self._clients = clients
        self._sample = sample
        self._repeats = repeats
        self._pid = start_bench_vault(stack)
        self._bench = VaultBench(stack.env, clients)
        self._admin = psycopg.connect(stack.env["PG_ADMIN_DSN"], autocommit=True)
        self._costs = CostMeter(self._admin, self._pid)
        self.stored = 0
        self._random = random.Random(18)

    def close(self) -> None:
        """Close the clients and the admin connection (the stack stops the service)."""
        self._bench.close()
        self._admin.close()

    def _scalar(self, query: str) -> object:
        row = self._admin.execute(query).fetchone()
        return row[0] if row else None

    def _index_fill(self, indexes: Sequence[str]) -> dict[str, float]:
        """How full the pages of the random-key hash indexes are, in % (pgstattuple; empty where it is missing)."""
        try:
            self._admin.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        except psycopg.Error:
            return {}
        return {
            name: 100.0 - float(str(self._scalar(f"SELECT free_percent FROM pgstathashindex('vault.{name}')")))
            for name in indexes
        }

    def costed(self, at: AtSize, name: str, count: int, work: Callable[[], float]) -> float:
        """Run `work` (which handles `count` values), recording WAL and CPU per value beside its rate."""
        before = self._costs.reading()
        rate = work()
        for key, value in self._costs.per_item(before, count).items():
            at.samples.setdefault(f"{name}_{key}", []).append(value)
        return rate

    def restart_service(self) -> None:
        """Restart the vault service: its token cache starts empty."""
        self._bench.close()
        stop_pid(self._pid)
        self._pid = start_bench_vault(self._stack)
        self._costs.vault_pid = self._pid
        self._bench = VaultBench(self._stack.env, self._clients)
        # Connect every channel before measuring: fresh values for the tokenizers, an unknown
        # token for the detokenizers.
        self.issue(1000 * self._clients)
        self._bench.single_latencies(["ip_" + "A" * 22], 1)

    def issue(self, count: int) -> float:
        """Tokenize `count` fresh values; new tokens/s."""
        rate, _ = self._bench.tokenize(self._bench.batches(ips(self.stored, count)))
        self.stored += count
        return rate

    def fill_to(self, target: int) -> None:
        """Issue fresh values until `target` tokens are stored, reporting the rate per million."""
        started, since = time.perf_counter(), self.stored
        while self.stored < target:
            self.issue(min(FILL_CHUNK, target - self.stored))
            if self.stored % 1_000_000 == 0 or self.stored == target:
                seconds = time.perf_counter() - started
                console.print(
                    f"filled to {self.stored:,}: {(self.stored - since) / seconds:,.0f} new tokens/s since {since:,}"
                )
                started, since = time.perf_counter(), self.stored

    def measure(self) -> AtSize:
        """Every figure `repeats` times at the current size."""
        at = AtSize(self.stored)
        at.samples["new"] = [
            self.costed(at, "new", self._sample, lambda: self.issue(self._sample)) for _ in range(self._repeats)
        ]
        issued_before_restart = self.stored  # the restart's warm-up values are in the new cache
        self.restart_service()
        positions = self._random.sample(range(issued_before_restart), self._sample * self._repeats)
        for repeat in range(self._repeats):
            values = [ips(p, 1)[0] for p in positions[repeat * self._sample : (repeat + 1) * self._sample]]
            tokens: list[str] = []

            def again(values: list[str] = values, tokens: list[str] = tokens) -> float:
                rate, issued = self._bench.tokenize(self._bench.batches(values))
                tokens.extend(issued)
                return rate

            at.samples.setdefault("repeated_cold", []).append(self.costed(at, "cold", len(values), again))
            at.samples.setdefault("detok", []).append(self._bench.detokenize(tokens))
            latencies = self._bench.single_latencies(tokens, 500)
            at.samples.setdefault("p50", []).append(percentile(latencies, 0.50) * 1000)
            at.samples.setdefault("p99", []).append(percentile(latencies, 0.99) * 1000)
        at.relation_bytes = {name: int(size) for name, size in self._admin.execute(_SIZES_SQL).fetchall()}
        at.index_fill = self._index_fill(("tokens_token_unique", "tokens_fingerprint_unique"))
        at.stored = int(str(self._scalar("SELECT count(*) FROM vault.tokens")))
        return at


FIGURES: dict[str, tuple[str, str]] = {
    "new": ("tokenize_new_per_s", "tokens/s"),
    "repeated_cold": ("tokenize_repeated_cold_per_s", "tokens/s"),
    "detok": ("detokenize_batched_per_s", "values/s"),
    "p50": ("detokenize_single_p50_ms", "ms"),
    "p99": ("detokenize_single_p99_ms", "ms"),
    "new_wal": ("wal_bytes_per_new_token", "bytes"),
    "new_db_us": ("postgres_cpu_us_per_new_token", "us"),
    "new_db_background_us": ("postgres_background_cpu_us_per_new_token", "us"),
    "new_vault_us": ("vault_cpu_us_per_new_token", "us"),
    "new_db_faults": ("postgres_page_faults_per_new_token", "faults"),
    "cold_wal": ("wal_bytes_per_repeated_cold", "bytes"),
    "cold_db_us": ("postgres_cpu_us_per_repeated_cold", "us"),
    "cold_db_background_us": ("postgres_background_cpu_us_per_repeated_cold", "us"),
    "cold_vault_us": ("vault_cpu_us_per_repeated_cold", "us"),
    "cold_db_faults": ("postgres_page_faults_per_repeated_cold", "faults"),
}


def figures_of(results: Sequence[AtSize], labels: Sequence[str]) -> Figures:
    """`figure:` values per size, then the largest size against the first."""
    figures: Figures = {}
    for label, at in zip(labels, results, strict=True):
        for key, (name, unit) in FIGURES.items():
            figures[f"scale_{label}_{name}"] = (at.median(key), unit)
        table_bytes = at.relation_bytes.get("tokens", 0)
        index_bytes = sum(v for k, v in at.relation_bytes.items() if k != "tokens")
        figures[f"scale_{label}_table_mb"] = (table_bytes / 2**20, "MiB")
        figures[f"scale_{label}_indexes_mb"] = (index_bytes / 2**20, "MiB")
        for name, fill in at.index_fill.items():
            figures[f"scale_{label}_{name}_fill"] = (fill, "%")
        if at.stored:
            figures[f"scale_{label}_bytes_per_token"] = ((table_bytes + index_bytes) / at.stored, "bytes")
    first, last = results[0], results[-1]
    for key in ("new", "repeated_cold", "detok"):
        name = FIGURES[key][0]
        figures[f"scale_ratio_{name}_{labels[-1]}_vs_{labels[0]}"] = (last.median(key) / first.median(key), "x")
    return figures


def print_curve(results: Sequence[AtSize], labels: Sequence[str]) -> None:
    """The curve as a table, one row per size, and the relation sizes."""
    table = Table(
        "stored",
        "new/s",
        "repeated cold/s",
        "detok batched/s",
        "p50 ms",
        "p99 ms",
        "WAL B/new",
        "pg µs/new",
        "of which background",
        "vault µs/new",
        "pg µs/cold",
        title="vault at scale",
    )
    for label, at in zip(labels, results, strict=True):
        table.add_row(
            f"{label} ({at.stored:,})",
            *(f"{at.median(k):,.0f}" for k in ("new", "repeated_cold", "detok")),
            *(f"{at.median(k):.2f}" for k in ("p50", "p99")),
            *(
                f"{at.median(k):,.1f}"
                for k in ("new_wal", "new_db_us", "new_db_background_us", "new_vault_us", "cold_db_us")
            ),
        )
    console.print(table)
    sizes = Table("relation", *labels, title="sizes on disk (MiB)")
    for name in sorted({n for at in results for n in at.relation_bytes}):
        sizes.add_row(name, *(f"{at.relation_bytes.get(name, 0) / 2**20:,.1f}" for at in results))
    console.print(sizes)


def run(sizes: Sequence[int], sample: int, repeats: int, clients: int, huge_pages: bool = True) -> Figures:
    """Start everything, fill and measure at each size, stop everything."""
    labels = [size_label(s) for s in sizes]
    results: list[AtSize] = []
    with temporary_components("tokenvault-scale-", huge_pages) as stack:
        memory = huge_pages_figure(stack, console)
        scale = ScaleRun(stack, clients, sample, repeats)
        try:
            scale.issue(4 * 1000)  # warm-up: connections, pools, first pages
            for size, label in zip(sizes, labels, strict=True):
                scale.fill_to(size)
                started = time.perf_counter()
                results.append(scale.measure())
                at = results[-1]
                console.print(
                    f"at {label}: new {at.median('new'):,.0f}/s, repeated cold {at.median('repeated_cold'):,.0f}/s, "
                    f"detok {at.median('detok'):,.0f}/s, p99 {at.median('p99'):.2f} ms "
                    f"({time.perf_counter() - started:.0f} s to measure)"
                )
        finally:
            scale.close()
    print_curve(results, labels)
    return {**memory, **figures_of(results, labels)}


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> None:
    """Parse arguments, run, print the curve and the figure lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="0,1M,3M,10M", help="stored tokens at which to measure")
    parser.add_argument("--sample", type=int, default=100_000, help="values per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure and size; medians")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    add_huge_pages_option(parser)
    args = parser.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    if sizes != sorted(sizes):
        parser.error("--sizes must grow")
    started = time.perf_counter()
    figures = run(sizes, args.sample, args.repeats, args.clients, args.huge_pages == "reserve")
    title = (
        f"vault at scale, {args.clients} clients, {args.sample:,} values x {args.repeats} per figure, "
        f"{os.cpu_count()} cores, {(time.perf_counter() - started) / 60:.1f} min"
    )
    print_figures(console, title, figures, value_header="median")


if __name__ == "__main__":
    main()
