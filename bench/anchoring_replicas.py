"""What hashing the other replica's audit rows costs a replica's single-token Detokenize (review 16, finding 3).

Two vault processes on one database (the shipped deployment runs 2 replicas). Replica B serves
a steady load of single-token Detokenize calls, so every upkeep round of replica A reads B's
rows in full and hashes them (~16 µs a row in Python, in one burst per round), while A's own
callers measure single-token latency and A's CPU per call. A is started in turn as shipped
(`hashed`: the segment read in pages of 256 rows and B's rows hashed with the interpreter
yielded every 64 rows), as first landed (`one-burst`: read and hashed at once), and with the round checking the
links of B's rows only (`links-only`: NOT safe, see docs/threat-model.md; a measurement control,
never shipped), the same load on every side.

`python -m bench.anchoring_replicas [--rounds 2]` starts its own components and stops them.
The last lines are `figure: <name> <value> <unit>`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console

from bench.cpu_time import process_cpu_seconds
from bench.report import Figures, print_figures
from bench.vault_bench import BENCH_POLICY, VaultBench, ips, percentile
from devstack.procs import free_port, spawn, stop_pid, wait_until
from devstack.services import vault_healthy
from devstack.stack import TemporaryStack, temporary_components, vault_service_env

console = Console()
REPO = Path(__file__).resolve().parents[1]

_LINKS_ONLY = """
import sys
from vault_service.domain import segment_check

# The measurement control: B's rows taken at their links, unhashed (not safe; they are still read).
segment_check._hashes = lambda row, versions: row.record is not None
from vault_service.__main__ import main
sys.exit(main())
"""
_SHIPPED = "import sys\nfrom vault_service.__main__ import main\nsys.exit(main())\n"
_ONE_BURST = (
    "from vault_service.service import upkeep_round\n"
    "upkeep_round._PAGE_ROWS = 10**9\n"
    "upkeep_round._yield_interpreter = lambda: None\n" + _SHIPPED
)
"""The round as first landed (2f96965): B's rows read (up to the page's byte bound) and hashed in one burst."""
_CODES = {"hashed": _SHIPPED, "one-burst": _ONE_BURST, "links-only": _LINKS_ONLY}
VARIANTS = tuple(_CODES)


def start_replica(stack: TemporaryStack, name: str, code: str) -> tuple[int, str]:
    """A vault process on the stack's database, running `code`; its PID and address."""
    state_dir = stack.state_dir
    policy = state_dir / "bench-policy.toml"
    policy.write_text(BENCH_POLICY)
    address = f"127.0.0.1:{free_port()}"
    env = {
        **vault_service_env(stack.env),
        "TOKENVAULT_POLICY_FILE": str(policy),
        "TOKENVAULT_METRICS_PORT": "0",
        "TOKENVAULT_LOG_LEVEL": "WARNING",
        "TOKENVAULT_GRPC_ADDRESS": address,
    }
    log_file = state_dir / "logs" / f"vault-{name}.log"
    pid = spawn([sys.executable, "-c", code], log_file, env=env, cwd=REPO)
    stack.state.pids[f"vault_{name}"] = pid
    stack.save()
    certs = state_dir / "certs"
    probe = (certs / "ca.pem", certs / "etl-service.pem", certs / "etl-service-key.pem")
    wait_until(lambda: vault_healthy(address, *probe), f"vault {name}", 60, pid, log_file)
    return pid, address


def measure(stack: TemporaryStack, variant: str, clients: int, load_clients: int) -> dict[str, float]:
    """A started as `variant`; B loaded by `load_clients` callers while A's `clients` measure; A stopped after."""
    pid_a, address_a = start_replica(stack, "a", _CODES[variant])
    a = VaultBench({**stack.env, "TOKENVAULT_GRPC_ADDRESS": address_a}, clients)
    b = VaultBench({**stack.env, "TOKENVAULT_GRPC_ADDRESS": stack.env["B_ADDRESS"]}, load_clients)
    try:
        _, tokens = a.tokenize(a.batches(ips(int(time.time()) % 1_000_000 * 1000, 4000)))
        a.single_latencies(tokens, 100)  # warm up
        stop, served = threading.Event(), [0] * load_clients

        def load(index: int) -> None:
            client, n = b.detokenizers[index], 0
            while not stop.is_set():
                client.detokenize([tokens[(index * 7919 + n) % len(tokens)]], purpose="benchmark")
                served[index] += 1
                n += 1

        loaders = [threading.Thread(target=load, args=(i,)) for i in range(load_clients)]
        for thread in loaders:
            thread.start()
        time.sleep(2)
        started, cpu, before = time.monotonic(), process_cpu_seconds(pid_a), sum(served)
        latencies = a.single_latencies(tokens, 500)
        cpu, rate = process_cpu_seconds(pid_a) - cpu, (sum(served) - before) / (time.monotonic() - started)
        stop.set()
        for thread in loaders:
            thread.join()
    finally:
        a.close()
        b.close()
        stop_pid(pid_a)
    return {
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "a_cpu_us_per_call": cpu / len(latencies) * 1e6,
        "b_rows_per_s": rate,
    }


def main() -> None:
    """Measure both variants alternately, `--rounds` times each; print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8, help="callers measuring on replica A")
    parser.add_argument("--load-clients", type=int, default=8, help="callers loading replica B")
    args = parser.parse_args()
    samples: dict[str, list[float]] = defaultdict(list)
    with temporary_components("tokenvault-anchoring-", huge_pages=False) as stack:
        pid_b, address_b = start_replica(stack, "b", _SHIPPED)
        stack.env["B_ADDRESS"] = address_b
        try:
            for round_no in range(args.rounds):
                for variant in VARIANTS if round_no % 2 == 0 else VARIANTS[::-1]:
                    figures = measure(stack, variant, args.clients, args.load_clients)
                    shown = ", ".join(f"{k} {v:.2f}" for k, v in figures.items())
                    console.print(f"round {round_no + 1} {variant}: {shown}")
                    for key, value in figures.items():
                        samples[f"{variant}:{key}"].append(value)
        finally:
            stop_pid(pid_b)
    units = {"p50_ms": "ms", "p99_ms": "ms", "a_cpu_us_per_call": "us", "b_rows_per_s": "rows/s"}
    medians: Figures = {
        name.replace(":", "_").replace("-", "_"): (statistics.median(values), units[name.split(":", 1)[1]])
        for name, values in sorted(samples.items())
    }
    print_figures(console, "replica A, its rounds hashing replica B's rows or not", medians)


if __name__ == "__main__":
    main()
