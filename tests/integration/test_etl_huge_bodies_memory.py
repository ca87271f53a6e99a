"""A flood of bodies near SQS's 256 KiB keeps the ETL within its pod's 256 MiB (deploy/k8s/etl-service).

Chaos 49, C49-6: the ledger bounded what is held by count alone (ETL_MAX_IN_FLIGHT, 2,000); a body over 16 KiB is
refused fast (body_too_large, not kept), so the settle rate - and the ledger's capacity - grew with the flood: a
drain of 1,200 such bodies and 200 events peaked at 317 MiB resident (an OOM kill in the pod, every message in
hand a receive spent). The bodies held are bounded now (inflight.MAX_HELD_BODY_BYTES).
Review 49, R49-6: the bound counted characters; bodies of emoji (4 bytes each in a Python str) held ~4x the memory
and the same flood peaked at 258-265 MiB - the `astral` case; the bound counts each body's memory now.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devstack.events import send_events
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_harness_env
from tests.integration.etl_landings import events, where_each_event_landed

REPO = Path(__file__).resolve().parents[2]
HUGE = 1200
POD_LIMIT_BYTES = 256 * 1024 * 1024


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.parametrize(
    "filler",
    ["x" * (250 * 1024), "\U0001f600" * (62 * 1024)],  # 250 KiB of ASCII; 248 KiB of 4-byte characters
    ids=["ascii", "astral"],
)
def test_a_flood_of_256_kib_bodies_keeps_the_etl_within_its_pod_memory(
    filler: str, stack_env: dict[str, str], vault: RunningVault
) -> None:
    env = {**etl_harness_env(stack_env, vault.address, visibility_timeout=60), "ETL_METRICS_PORT": "0"}
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])

    def send(i: int) -> None:
        sqs.send_message(
            QueueUrl=env["ETL_QUEUE_URL"],
            MessageBody='{"pad": "' + filler + f'{i}"' + "}",
            MessageAttributes={"event_id": {"DataType": "String", "StringValue": f"huge-{uuid.uuid4().hex}"}},
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(HUGE)))
    good = events(200, malformed_rate=0)
    send_events(sqs, env["ETL_QUEUE_URL"], good)
    process = subprocess.Popen(
        [sys.executable, "-m", "etl_service", "drain"],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = 0
    while process.poll() is None:
        peak = max(peak, peak_rss(process.pid))
        time.sleep(0.05)
    assert process.returncode == 0
    assert len(where_each_event_landed(stack_env["PG_ADMIN_DSN"], good)[0]) == len(good)
    print(f"peak RSS {peak / 2**20:.0f} MiB")
    assert peak < POD_LIMIT_BYTES, f"peak RSS {peak / 2**20:.0f} MiB over the pod's 256 MiB"
