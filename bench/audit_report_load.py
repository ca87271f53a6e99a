"""What an audit report costs the serving vault: its peak memory, and an analyst's Detokenize latency meanwhile.

`python -m bench.audit_report_load --rows 200000` starts its own OpenBao and PostgreSQL and a
vault service process (`python -m vault_service`, TOKENVAULT_AUDIT_REPORT_MAX_ROWS raised so any
revision reports), plants `--rows` production-shaped audit rows (a certificate serial and digest,
one token hash, a case purpose; chained by the database's own trigger), waits until they are
checkpointed, then has one analyst call Detokenize (one token) every 10 ms: `--idle` seconds
alone, then throughout the security team's Verify. The vault's peak RSS (VmHWM) is reset through
/proc/PID/clear_refs before the report. Ends with `figure:` lines (docs/performance.md, 5 December,
review 30 R30-1).
"""

from __future__ import annotations

import argparse
import re
import statistics
import threading
import time
from pathlib import Path

import psycopg
from rich.console import Console

from bench.report import Figures, print_figures
from devstack.services import start_vault_service
from devstack.stack import temporary_components, vault_service_env
from tokenvault_client import ClientIdentity, TokenType, VaultClient

console = Console()
PLANT = (
    "INSERT INTO vault.audit_log (client, action, item_count, outcome, purpose, token_types,"
    " client_serial, client_cert_sha256, revealed)"
    " SELECT 'analyst-b', 'detokenize', 1, 'ok: 1 revealed, 0 refused', 'CASE-' || n, 'ip',"
    " '5f3a9c0e1b7d', encode(sha256(n::text::bytea), 'hex'), ARRAY[substring(sha256(n::text::bytea) from 1 for 16)]"
    " FROM generate_series(1, %s) AS n"
)
ANCHORED = (
    "SELECT (SELECT coalesce(max(head_id), 0) FROM vault.audit_checkpoints) >= (SELECT max(id) FROM vault.audit_log)"
)


def _kb(pid: int, field: str) -> int:
    found = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no {field} for process {pid}")
    return int(found.group(1))


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _detokenize_until(client: VaultClient, token: str, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        client.detokenize([token], "CASE-1")
        out.append((time.perf_counter() - start) * 1000)
        time.sleep(0.01)


def _latencies(client: VaultClient, token: str, during: threading.Thread | None, seconds: float) -> list[float]:
    """Detokenize latencies (ms) for `seconds`, or while `during` runs."""
    found: list[float] = []
    stop = threading.Event()
    loop = threading.Thread(target=_detokenize_until, args=(client, token, stop, found))
    loop.start()
    if during is None:
        time.sleep(seconds)
    else:
        during.start()
        during.join()
    stop.set()
    loop.join()
    return found


def run(rows: int, idle: float) -> Figures:
    """Start everything, measure once, stop everything; figure name -> (value, unit)."""
    with temporary_components("tokenvault-bench-reports-") as stack:
        env, state_dir = stack.env, stack.state_dir
        certs = state_dir / "certs"

        def identity(name: str) -> ClientIdentity:
            return ClientIdentity(certs / "ca.pem", certs / f"{name}.pem", certs / f"{name}-key.pem", "localhost")

        service_env = {
            **vault_service_env(env),
            "TOKENVAULT_METRICS_PORT": "0",
            "TOKENVAULT_LOG_LEVEL": "WARNING",
            "TOKENVAULT_AUDIT_CHECKPOINT_SECONDS": "1",
            "TOKENVAULT_AUDIT_REPORT_MAX_ROWS": "100000000",
        }
        probe = (certs / "ca.pem", certs / "etl-service.pem", certs / "etl-service-key.pem")
        pid = start_vault_service(service_env, state_dir / "logs" / "vault.log", probe)
        stack.state.pids["vault_service"] = pid
        stack.save()
        address = service_env["TOKENVAULT_GRPC_ADDRESS"]
        with VaultClient.connect(address, identity("etl-service")) as etl:
            token = str(etl.tokenize([(TokenType.IP, "10.93.0.1")])[0])
        with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as owner:
            owner.execute(PLANT, (rows,))
            deadline = time.monotonic() + 600
            while not (row := owner.execute(ANCHORED).fetchone()) or not row[0]:
                if time.monotonic() > deadline:
                    raise RuntimeError("the planted rows were not checkpointed within 600 s")
                time.sleep(0.5)
        with (
            VaultClient.connect(address, identity("analyst")) as analyst,
            VaultClient.connect(address, identity("security-team")) as security,
        ):
            for _ in range(20):
                analyst.detokenize([token], "CASE-1")
            before = _latencies(analyst, token, None, idle)
            Path(f"/proc/{pid}/clear_refs").write_text("5")
            resident = _kb(pid, "VmRSS")
            took: list[float] = []

            def report() -> None:
                start = time.perf_counter()
                if not security.audit_verify(deadline=300).intact:
                    raise RuntimeError("the planted log did not verify")
                took.append(time.perf_counter() - start)

            during = _latencies(analyst, token, threading.Thread(target=report), 0)
            peak = _kb(pid, "VmHWM")
    if not took:
        raise RuntimeError("the report did not end")
    return {
        "report_seconds": (took[0], "s"),
        "vault_rss_before_mb": (resident / 1024, "MB"),
        "vault_peak_during_report_mb": (peak / 1024, "MB"),
        "detokenize_p50_before_ms": (statistics.median(before), "ms"),
        "detokenize_p99_before_ms": (_percentile(before, 0.99), "ms"),
        "detokenize_p50_during_ms": (statistics.median(during), "ms"),
        "detokenize_p99_during_ms": (_percentile(during, 0.99), "ms"),
    }


def main() -> None:
    """Parse the options, run, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=200_000, help="audit rows planted before the report")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of Detokenize measured before the report")
    args = parser.parse_args()
    print_figures(console, f"an audit report over {args.rows:,} rows", run(args.rows, args.idle))


if __name__ == "__main__":
    main()
