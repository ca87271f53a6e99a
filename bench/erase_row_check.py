"""What reading the rows' load batches whole adds to `tokenvault erase`'s check (attack 41, A41-1's Left).

`erase` verifies every row holding the tokens against the ETL's signed list of its batch; it now also reads every
row of those lists (`count_reach(..., whole_lists=True)`: are they all there, none changed or copied?). The cost
grows with the rows of the batches the person's rows sit in, not with the person's rows. Here one person's rows,
each in a batch of its own with other people's rows (the worst spread), signed with a key of the bench's own (the
check is offline: a public key verifies), are counted by the officer's login with and without the whole-list read.

`python -m bench.erase_row_check [--person-rows 100 1000] [--batch-rows 100 1000] [--rounds 5] [--peak-memory]`
starts its own components (Postgres with the migrations) and stops them. The last lines are `figure: <name> <value>
<unit>`. `--peak-memory`: also one whole-list check in a fresh process of its own (review 47, R47-12): its peak RSS
(VmRSS after its imports, VmHWM: the most it held) and tracemalloc's peak of Python objects during the check.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
import uuid
from datetime import date

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from rich.console import Console

from bench.report import Figures, print_figures
from devstack.stack import temporary_components
from tokenvault_cli.erase_reach import count_reach
from tokenvault_common.login_row_signatures import PublicKeys, row_digest, signed_input

PERSON = "bench-person"
DAY = date(2026, 12, 6)


def _load(dsn: str, key: Ed25519PrivateKey, person_rows: int, batch_rows: int) -> list[str]:
    """`person_rows` batches of `batch_rows` rows, one the person's (tokens of their own); the person's tokens."""
    tokens = [f"ip_bench{n:014d}" for n in range(person_rows)]
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        lists, rows = [], []
        for batch, token in enumerate(tokens):
            manifest = uuid.uuid4()
            digests = bytearray()
            for n in range(batch_rows):
                user, ip = (PERSON, token) if n == 0 else (f"bench-{batch}-{n}", f"ip_other{batch:07d}x{n:05d}")
                event, device = f"bench-{batch}-{n}", f"dev_bench{batch:07d}x{n:05d}"
                digests += row_digest(event, user, ip, device, DAY)
                rows.append((event, user, ip, device, DAY, manifest))
            signature = "vault:v1:" + base64.b64encode(key.sign(signed_input(manifest, bytes(digests)))).decode()
            lists.append((manifest, bytes(digests), signature))
        cur.executemany("INSERT INTO user_login_manifests (manifest_id, digests, signature) VALUES (%s, %s, %s)", lists)
        with cur.copy(
            "COPY user_logins (event_id, user_id, masked_ip, masked_device_id, create_date, row_manifest) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute("ANALYZE user_logins")
    return tokens


def _timed(dsn: str, tokens: list[str], keys: PublicKeys, whole_lists: bool, rounds: int) -> float:
    """Median seconds of the officer's count and check, as `erase` runs it."""
    spent = []
    for _ in range(rounds):
        started = time.perf_counter()
        check = count_reach(dsn, tokens, [PERSON], lambda: keys, whole_lists).check
        spent.append(time.perf_counter() - started)
        assert check is not None and (check.failing, check.missing, check.changed, check.copied) == (0, 0, 0, 0)
    return statistics.median(spent)


def _peak_memory(dsn: str, tokens: list[str], keys_json: str) -> tuple[float, float, float]:
    """One whole-list check in a fresh process: its RSS before, its peak RSS, tracemalloc's peak (MiB)."""
    given = json.dumps({"dsn": dsn, "tokens": tokens, "keys": keys_json})
    out = subprocess.run(
        [sys.executable, "-m", "bench.erase_row_check", "--child"], input=given, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    before, peak, traced = json.loads(out.stdout.splitlines()[-1])
    return float(before), float(peak), float(traced)


def _status_mib(field: str) -> float:
    """A field of /proc/self/status in MiB (Linux). Not getrusage's ru_maxrss: a forked child inherits the
    parent's high-water mark across exec (the bench holds its loaded rows), VmHWM is the new process's own."""
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _child() -> None:
    """The --peak-memory child: reads {dsn, tokens, keys} on stdin, prints [rss before, peak rss, traced peak] MiB."""
    given = json.loads(sys.stdin.read())
    keys = PublicKeys.parse(given["keys"])
    before = _status_mib("VmRSS")
    tracemalloc.start()
    check = count_reach(given["dsn"], given["tokens"], [PERSON], lambda: keys, True).check
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = _status_mib("VmHWM")
    assert check is not None and (check.failing, check.missing, check.changed, check.copied) == (0, 0, 0, 0)
    print(json.dumps([before, peak, traced / 2**20]))


def main() -> None:
    """Measure, print the figures."""
    if sys.argv[1:] == ["--child"]:
        _child()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--person-rows", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--batch-rows", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--peak-memory", action="store_true", help="also a whole-list check's peak memory")
    args = parser.parse_args()
    key = Ed25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    keys_json = f'{{"keys": {{"1": {{"public_key": "{public}"}}}}}}'
    keys = PublicKeys.parse(keys_json)
    figures: Figures = {}
    with temporary_components("tokenvault-erase-check-") as stack:
        admin, officer = stack.env["PG_ADMIN_DSN"], stack.env["PG_PRIVACY_OFFICER_DSN"]
        for batch_rows in args.batch_rows:
            for person_rows in args.person_rows:
                with psycopg.connect(admin) as conn:
                    conn.execute("TRUNCATE user_logins, user_login_manifests")
                tokens = _load(admin, key, person_rows, batch_rows)
                rows_only = _timed(officer, tokens, keys, False, args.rounds)
                whole = _timed(officer, tokens, keys, True, args.rounds)
                name = f"{person_rows}_person_rows_in_batches_of_{batch_rows}"
                figures[f"check_rows_only_{name}"] = (rows_only * 1000, "ms")
                figures[f"check_whole_lists_{name}"] = (whole * 1000, "ms")
                if args.peak_memory:
                    before, peak, traced = _peak_memory(officer, tokens, keys_json)
                    figures[f"rss_before_check_{name}"] = (before, "MiB")
                    figures[f"peak_rss_whole_lists_{name}"] = (peak, "MiB")
                    figures[f"traced_peak_whole_lists_{name}"] = (traced, "MiB")
    print_figures(Console(), "erase's row check (median ms)", figures)


if __name__ == "__main__":
    main()
