"""Token vault throughput and latency beside OpenBao Transit and a bare gRPC server, in one run.

`make bench-vault` (or `python -m bench.vault_bench`) starts its own OpenBao, PostgreSQL and
vault service process (embedded stack components on free ports), measures each figure
`--rounds` times and reports the median, then stops everything it started. Its peers, measured
in the same rounds: OpenBao Transit's convergent batch encryption (the speed of the machine that
hour), and a bare gRPC Python server's health check from the same callers (`bench.grpc_peer`:
what gRPC alone costs under the single-token figures). The last lines
are `figure: <name> <value> <unit>`, one per figure.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import os
import signal
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import hvac
import psycopg
from rich.console import Console

from bench.cpu_time import CostMeter, process_cpu_seconds
from bench.grpc_peer import bare_grpc_server
from bench.huge_pages import add_huge_pages_option, huge_pages_figure
from bench.report import Figures, parallel, print_figures
from devstack.openbao import bao_binary
from devstack.procs import free_port, spawn, wait_until
from devstack.services import start_vault_service
from devstack.stack import TemporaryStack, temporary_components, vault_service_env
from tokenvault_client import ChunkLimits, ClientIdentity, TokenType, VaultClient

BATCH = 1000
IP = TokenType.IP
console = Console()

# Limits far above what the machine can do, for measuring: the shipped policy rate-limits
# people on purpose, and limits fail closed (a client without its own gets the defaults).
# The metering itself still runs on every call, so its cost is in the figures.
BENCH_POLICY = """
[clients.etl-service]
tokenize = ["ip", "device_id"]
[clients.etl-service.limits]
tokenize_per_second = 1e9
tokenize_burst = 1000000000
new_tokens_per_second = 1e9
new_tokens_burst = 1000000000
[clients.fraud-investigator.detokenize]
ip = "plain"
device_id = "plain"
[clients.fraud-investigator.limits]
detokenize_per_second = 1e9
detokenize_burst = 1000000000
"""


_PURPOSE_NUMBERS = itertools.count(1)


def distinct_purpose() -> str:
    """A realistic reference never given before in this process (`ALERT-2026-000123`, `ALERT-2026-000124`...).

    15 characters without separators, so the check for a piece of the call's token runs in full
    (it returns at once below 12), and 3 groups, as an alert or case id has.
    """
    return f"ALERT-2026-{next(_PURPOSE_NUMBERS):06d}"


def ips(start: int, count: int) -> list[str]:
    """`count` distinct IPv4 addresses from position `start` on."""
    return [f"{10 + (n >> 24) % 200}.{(n >> 16) % 256}.{(n >> 8) % 256}.{n % 256}" for n in range(start, start + count)]


class VaultBench:
    """Calls against the running vault service over mTLS, through the vault client."""

    def __init__(self, env: dict[str, str], clients: int) -> None:
        certs = Path(env["STACK_DIR"]) / "certs"
        address = env["TOKENVAULT_GRPC_ADDRESS"]

        def client(name: str) -> VaultClient:
            identity = ClientIdentity(certs / "ca.pem", certs / f"{name}.pem", certs / f"{name}-key.pem", "localhost")
            return VaultClient.connect(address, identity, deadline=120, limits=ChunkLimits(max_items=BATCH))

        self.env = env
        self.clients = clients
        self.tokenizers = [client("etl-service") for _ in range(clients)]
        self.detokenizers = [client("fraud-investigator") for _ in range(clients)]

    @staticmethod
    def batches(values: Sequence[str]) -> list[Sequence[str]]:
        """Batches of BATCH values (each sent as one value column, the compact form bulk callers use)."""
        return [values[i : i + BATCH] for i in range(0, len(values), BATCH)]

    def tokenize(self, batches: list[Sequence[str]]) -> tuple[float, list[str]]:
        """Items/s over all batches spread on the clients, and the tokens in batch order."""
        results: dict[int, list[str]] = {}

        def work(index: int) -> None:
            for n in range(index, len(batches), self.clients):
                results[n] = self.tokenizers[index].tokenize_columns([(IP, batches[n])])[0].tokens

        seconds = parallel(self.clients, work)
        tokens = [t for n in range(len(batches)) for t in results[n]]
        return sum(len(b) for b in batches) / seconds, tokens

    def detokenize(self, tokens: Sequence[str]) -> float:
        """Values/s revealed in batches of BATCH."""
        batches = self.batches(tokens)

        def work(index: int) -> None:
            for n in range(index, len(batches), self.clients):
                self.detokenizers[index].detokenize(batches[n], purpose="benchmark")

        return len(tokens) / parallel(self.clients, work)

    def single_latencies(self, tokens: Sequence[str], calls_per_client: int, distinct: bool = False) -> list[float]:
        """Seconds per single-token Detokenize, from every client calling at once.

        With one constant purpose (`benchmark`) every check of it is answered from a cache after
        the first call; `distinct` gives each call a purpose of its own (`distinct_purpose`), as a
        pipeline tagging each reveal with its alert id does: the path of a purpose first seen.
        """

        def call(client: VaultClient, index: int, n: int) -> None:
            purpose = distinct_purpose() if distinct else "benchmark"
            client.detokenize([tokens[(index * calls_per_client + n) % len(tokens)]], purpose=purpose)

        return self._latencies(call, calls_per_client)

    def health_latencies(self, calls_per_client: int) -> list[float]:
        """Seconds per gRPC health check on the same channels and concurrency: the server's floor.

        A health check goes through gRPC's Python server, TLS and the client library like any
        call, but touches no database and writes no audit row; the gap between its latency and
        a single-token Detokenize's is what the vault's own work adds.
        """
        return self._latencies(lambda client, index, n: client.ready(timeout=10), calls_per_client)

    def _latencies(self, call: Callable[[VaultClient, int, int], None], calls_per_client: int) -> list[float]:
        latencies: list[list[float]] = [[] for _ in range(self.clients)]

        def work(index: int) -> None:
            client = self.detokenizers[index]
            for n in range(calls_per_client):
                started = time.perf_counter()
                call(client, index, n)
                latencies[index].append(time.perf_counter() - started)

        parallel(self.clients, work)
        return [x for per_client in latencies for x in per_client]

    def close(self) -> None:
        """Close every channel."""
        for client in (*self.tokenizers, *self.detokenizers):
            client.close()


@contextmanager
def transit_peer(state_dir: Path) -> Iterator[hvac.Client]:
    """An OpenBao dev server whose listener accepts 1000-item batches, with a convergent key."""
    dev_port, port = free_port(), free_port()
    config = state_dir / "bench-openbao.hcl"
    config.write_text(
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  cluster_address = "127.0.0.1:{free_port()}"\n'
        "  tls_disable = true\n  max_request_json_strings = 1000000\n}\n"
    )
    token = base64.urlsafe_b64encode(os.urandom(18)).decode()  # throwaway dev root token
    log = state_dir / "bench-openbao.log"
    pid = spawn(
        [
            bao_binary(),
            "server",
            "-dev",
            f"-dev-listen-address=127.0.0.1:{dev_port}",
            f"-config={config}",
            "-dev-no-store-token",
        ],
        log,
        env={"BAO_DEV_ROOT_TOKEN_ID": token},
    )
    try:
        client = hvac.Client(url=f"http://127.0.0.1:{port}", token=token, timeout=120)
        wait_until(lambda: client.sys.is_initialized() and not client.sys.is_sealed(), "bench OpenBao", 30, pid, log)
        client.sys.enable_secrets_engine("transit", path="transit")
        client.secrets.transit.create_key(
            name="convergent", key_type="aes256-gcm96", derived=True, convergent_encryption=True
        )
        yield client
    finally:
        os.kill(pid, signal.SIGTERM)


def transit_encrypt(client: hvac.Client, values: Sequence[str], clients: int) -> float:
    """Items/s of convergent batch encryption, BATCH items per request, `clients` at once."""
    context = base64.b64encode(b"ip").decode()
    batches = [
        [{"plaintext": base64.b64encode(v.encode()).decode(), "context": context} for v in values[i : i + BATCH]]
        for i in range(0, len(values), BATCH)
    ]
    per_thread = [hvac.Client(url=client.url, token=client.token, timeout=120) for _ in range(clients)]

    def work(index: int) -> None:
        for n in range(index, len(batches), clients):
            response = per_thread[index].secrets.transit.encrypt_data(
                name="convergent", plaintext="", batch_input=batches[n]
            )
            if any("error" in item and item["error"] for item in response["data"]["batch_results"]):
                raise RuntimeError("Transit refused an item")

    return len(values) / parallel(clients, work)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Peers(NamedTuple):
    """What the vault is measured beside: OpenBao Transit, and a bare gRPC server with its callers."""

    transit: hvac.Client
    grpc: VaultBench
    grpc_pid: int


def measure(
    bench: VaultBench,
    state_dir: Path,
    values_per_round: int,
    rounds: int,
    clients: int,
    costs: CostMeter,
    distinct_purposes: bool = False,
) -> dict[str, list[float]]:
    """Every figure once per round, the vault and its peers side by side."""
    samples: dict[str, list[float]] = defaultdict(list)
    with (
        transit_peer(state_dir) as transit,
        bare_grpc_server(state_dir / "certs", state_dir / "logs" / "grpc-peer.log") as (address, pid),
    ):
        bare = VaultBench({**bench.env, "TOKENVAULT_GRPC_ADDRESS": address}, clients)
        try:
            peers = Peers(transit, bare, pid)
            transit_encrypt(transit, ips(0, BATCH * 4), clients)  # warm up
            bench.tokenize(bench.batches(ips(900_000_000, BATCH * 4)))
            for round_no in range(rounds):
                values = ips(round_no * values_per_round, values_per_round)
                measure_round(bench, peers, values, clients, costs, samples, distinct_purposes)
                console.print(
                    f"round {round_no + 1}/{rounds}: tokenize new {samples['new'][-1]:,.0f}/s, "
                    f"repeated {samples['repeated'][-1]:,.0f}/s, transit {samples['transit'][-1]:,.0f}/s"
                )
        finally:
            bare.close()
    return samples


def measure_round(
    bench: VaultBench,
    peers: Peers,
    values: Sequence[str],
    clients: int,
    costs: CostMeter,
    samples: dict[str, list[float]],
    distinct_purposes: bool = False,
) -> None:
    """One round of every figure on `values` (never tokenized before), appended to `samples`."""
    requests = bench.batches(values)
    before = costs.reading()
    new_rate, tokens = bench.tokenize(requests)
    cost = costs.per_item(before, len(values))
    samples["new_vault_us"].append(cost["vault_us"])
    samples["new_db_us"].append(cost["db_us"])
    repeated_rate, again = bench.tokenize(requests)
    if again != tokens:
        raise RuntimeError("repeated values got different tokens")
    samples["new"].append(new_rate)
    samples["repeated"].append(repeated_rate)
    samples["detok"].append(bench.detokenize(tokens))
    before = costs.reading()
    latencies = bench.single_latencies(tokens, 500)
    cost = costs.per_item(before, len(latencies))
    samples["single_vault_us"].append(cost["vault_us"])
    samples["single_db_us"].append(cost["db_us"])
    samples["p50"].append(percentile(latencies, 0.50) * 1000)
    samples["p99"].append(percentile(latencies, 0.99) * 1000)
    if distinct_purposes:
        before = costs.reading()
        latencies = bench.single_latencies(tokens, 500, distinct=True)
        cost = costs.per_item(before, len(latencies))
        samples["distinct_vault_us"].append(cost["vault_us"])
        samples["distinct_db_us"].append(cost["db_us"])
        samples["distinct_p50"].append(percentile(latencies, 0.50) * 1000)
        samples["distinct_p99"].append(percentile(latencies, 0.99) * 1000)
    before = costs.reading()
    floor = bench.health_latencies(500)
    samples["health_vault_us"].append(costs.per_item(before, len(floor))["vault_us"])
    samples["health_p50"].append(percentile(floor, 0.50) * 1000)
    samples["health_p99"].append(percentile(floor, 0.99) * 1000)
    cpu_before = process_cpu_seconds(peers.grpc_pid)
    bare = peers.grpc.health_latencies(500)
    samples["bare_us"].append((process_cpu_seconds(peers.grpc_pid) - cpu_before) / len(bare) * 1e6)
    samples["bare_p50"].append(percentile(bare, 0.50) * 1000)
    samples["bare_p99"].append(percentile(bare, 0.99) * 1000)
    samples["transit"].append(transit_encrypt(peers.transit, values, clients))


def start_bench_vault(stack: TemporaryStack) -> int:
    """Start the vault service on the stack's components with the benchmark's policy; its PID."""
    env, state_dir = stack.env, stack.state_dir
    policy = state_dir / "bench-policy.toml"
    policy.write_text(BENCH_POLICY)
    service_env = {
        **vault_service_env(env),
        "TOKENVAULT_POLICY_FILE": str(policy),
        "TOKENVAULT_METRICS_PORT": "0",
        "TOKENVAULT_LOG_LEVEL": "WARNING",
    }
    certs = state_dir / "certs"
    probe = (certs / "ca.pem", certs / "etl-service.pem", certs / "etl-service-key.pem")
    pid = start_vault_service(service_env, state_dir / "logs" / "vault.log", probe)
    stack.state.pids["vault_service"] = pid
    stack.save()
    return pid


def run(
    values_per_round: int, rounds: int, clients: int, huge_pages: bool = True, distinct_purposes: bool = False
) -> Figures:
    """Start everything, measure, stop everything; figure name -> (median, unit)."""
    with temporary_components("tokenvault-bench-", huge_pages) as stack:
        memory = huge_pages_figure(stack, console)
        pid = start_bench_vault(stack)
        bench = VaultBench(stack.env, clients)
        try:
            with psycopg.connect(stack.env["PG_ADMIN_DSN"], autocommit=True) as admin:
                costs = CostMeter(admin, pid)
                samples = measure(bench, stack.state_dir, values_per_round, rounds, clients, costs, distinct_purposes)
        finally:
            bench.close()
    median = {k: statistics.median(v) for k, v in samples.items()}
    distinct: Figures = {}
    if distinct_purposes:
        distinct = {
            "detokenize_single_distinct_purpose_p50_ms": (median["distinct_p50"], "ms"),
            "detokenize_single_distinct_purpose_p99_ms": (median["distinct_p99"], "ms"),
            "vault_cpu_us_per_single_distinct_purpose": (median["distinct_vault_us"], "us"),
            "postgres_cpu_us_per_single_distinct_purpose": (median["distinct_db_us"], "us"),
        }
    return {
        **distinct,
        **memory,
        "tokenize_new_per_s": (median["new"], "tokens/s"),
        "tokenize_repeated_per_s": (median["repeated"], "tokens/s"),
        "detokenize_batched_per_s": (median["detok"], "values/s"),
        "detokenize_single_p50_ms": (median["p50"], "ms"),
        "detokenize_single_p99_ms": (median["p99"], "ms"),
        "grpc_health_check_p50_ms": (median["health_p50"], "ms"),
        "grpc_health_check_p99_ms": (median["health_p99"], "ms"),
        "bare_grpc_health_check_p50_ms": (median["bare_p50"], "ms"),
        "bare_grpc_health_check_p99_ms": (median["bare_p99"], "ms"),
        "openbao_transit_convergent_batch_per_s": (median["transit"], "items/s"),
        "ratio_tokenize_new_vs_transit": (median["new"] / median["transit"], "x"),
        "ratio_tokenize_repeated_vs_transit": (median["repeated"] / median["transit"], "x"),
        "vault_cpu_us_per_new_token": (median["new_vault_us"], "us"),
        "postgres_cpu_us_per_new_token": (median["new_db_us"], "us"),
        "vault_cpu_us_per_single_detokenize": (median["single_vault_us"], "us"),
        "postgres_cpu_us_per_single_detokenize": (median["single_db_us"], "us"),
        "vault_cpu_us_per_health_check": (median["health_vault_us"], "us"),
        "bare_grpc_cpu_us_per_health_check": (median["bare_us"], "us"),
    }


def main() -> None:
    """Parse arguments, run, print the table and the figure lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--values", type=int, default=100_000, help="distinct values per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument(
        "--distinct-purposes",
        action="store_true",
        help="also measure single-token Detokenize with a purpose of its own per call (no cached purpose check)",
    )
    add_huge_pages_option(parser)
    args = parser.parse_args()
    figures = run(args.values, args.rounds, args.clients, args.huge_pages == "reserve", args.distinct_purposes)
    title = (
        f"vault, {args.clients} clients, batches of {BATCH}, "
        f"{args.values:,} values x {args.rounds} rounds, {os.cpu_count()} cores"
    )
    print_figures(console, title, figures, value_header="median")


if __name__ == "__main__":
    main()
