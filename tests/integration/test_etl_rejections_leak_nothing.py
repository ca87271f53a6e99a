"""Rejected events leak no raw ip or device id: not in the ETL's log, the quarantine, or the metrics.

DESIGN §2 / docs/threat-model.md: "no raw PII in logs, errors, metrics". The values most likely
to leak are those of malformed events, which a rejection message could quote ("invalid ip:
..."). The ETL runs as its own process on real SQS, the vault and Postgres; its log is its
stderr, its metrics are scraped with the stack's scraper certificate while it runs, and the
vault's metrics are the ones this process (the in-process vault) would serve.
"""

from __future__ import annotations

import signal
import subprocess
import time

import psycopg
from prometheus_client import REGISTRY, generate_latest

from devstack.events import send_events
from devstack.procs import free_port
from devstack.sqs import sqs_client
from tests.conftest import RunningVault, etl_harness_env
from tests.integration.etl_landings import events, where_each_event_landed
from tests.integration.etl_process import exit_within, start_etl, wait_until_landed
from tests.leaky_events import leaked, leaky_events, raw_values
from tests.metrics_scrape import quarantined_total, stack_scrape


def test_rejected_events_leave_no_raw_value_in_logs_quarantine_or_metrics(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    leaky = leaky_events()
    sent = leaky.events + events(200, malformed_rate=0.3)
    raw = leaky.raw | raw_values(e.body for e in sent)
    port = free_port()
    env = {**etl_harness_env(stack_env, vault.address), "ETL_METRICS_PORT": str(port)}
    send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), env["ETL_QUEUE_URL"], sent)
    process = start_etl(env, stdout=subprocess.DEVNULL)
    try:
        wait_until_landed(process, stack_env["PG_ADMIN_DSN"], sent, len(sent))
        deadline = time.monotonic() + 60
        _, quarantined_ids = where_each_event_landed(stack_env["PG_ADMIN_DSN"], sent)
        etl_metrics = stack_scrape(stack_env, f"https://127.0.0.1:{port}/metrics")
        while quarantined_total(etl_metrics) < len(quarantined_ids):  # a batch is counted after it is settled
            assert time.monotonic() < deadline, "the ETL's metrics never counted every rejection"
            time.sleep(0.1)
            etl_metrics = stack_scrape(stack_env, f"https://127.0.0.1:{port}/metrics")
    finally:
        process.send_signal(signal.SIGTERM)
        logs = exit_within(process, 30, "SIGTERM").decode()
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        quarantine = conn.execute(
            "SELECT event_id, reason, detail FROM etl_quarantine WHERE event_id = ANY(%s)",
            ([e.event_id for e in sent],),
        ).fetchall()
    # The act was done: every crafted event was rejected, for the reason it was made for.
    assert {event_id: reason for event_id, reason, _ in quarantine if event_id in leaky.reasons} == leaky.reasons
    assert '"quarantined"' in logs
    vault_metrics = generate_latest(REGISTRY).decode()
    assert "tokenvault_tokenize_new_tokens_total" in vault_metrics
    assert leaked(raw, logs) == [], "raw values in the ETL's log"
    assert leaked(raw, *(detail for _, _, detail in quarantine)) == [], "raw values in etl_quarantine.detail"
    assert leaked(raw, etl_metrics) == [], "raw values in the ETL's metrics"
    assert leaked(raw, vault_metrics) == [], "raw values in the vault's metrics"
