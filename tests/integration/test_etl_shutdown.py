"""SIGTERM with the vault hung (alive, not answering): the ETL exits within its grace period, losing nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from devstack.events import send_events
from devstack.procs import free_port
from devstack.sqs import sqs_client
from tests.conftest import etl_consumer, etl_harness_env
from tests.integration.etl_landings import assert_each_event_landed_once, events
from tests.integration.etl_process import EtlLog, exit_within, start_etl, wait_until_landed
from tests.metrics_scrape import stack_scrape

GRACE_SECONDS = 3


def test_sigterm_with_a_hung_vault_exits_within_the_grace_period_and_loses_nothing(
    stack_env: dict[str, str], vault_process: tuple[str, int]
) -> None:
    address, vault_pid = vault_process
    sent = events(2000, malformed_rate=0.05)
    env = {
        **etl_harness_env(stack_env, address, visibility_timeout=30),
        "ETL_BATCH_SIZE": "50",
        "ETL_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        "ETL_METRICS_PORT": "0",
    }
    send_events(sqs_client(stack_env["SQS_ENDPOINT_URL"]), env["ETL_QUEUE_URL"], sent)
    process = start_etl(env, "drain")
    wait_until_landed(process, stack_env["PG_ADMIN_DSN"], sent, 200)
    os.kill(vault_pid, signal.SIGSTOP)  # hung: connections stay open, nothing answers
    time.sleep(1)  # batches in hand now wait on Tokenize (10 s deadline)
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    err = exit_within(process, 60, "SIGTERM")
    took = time.monotonic() - signalled
    assert process.returncode == 0, err.decode()[-2000:]
    assert took < GRACE_SECONDS + 2, f"exit took {took:.1f} s"
    assert b"shutdown grace over: releasing unfinished work" in err
    os.kill(vault_pid, signal.SIGCONT)
    with etl_consumer(env) as etl:  # released at stop: visible again, a new consumer finishes the job
        etl.wired.consumer.drain()
    assert_each_event_landed_once(stack_env["PG_ADMIN_DSN"], sent, stack_env["SQS_ENDPOINT_URL"], etl.dlq_url)


def test_an_idle_service_exports_its_dependencies_up_from_the_start_and_exits_within_2_s_of_sigterm(
    stack_env: dict[str, str], vault_process: tuple[str, int]
) -> None:
    port = free_port()
    env = {**etl_harness_env(stack_env, vault_process[0]), "ETL_METRICS_PORT": str(port)}
    process = start_etl({**env, "PYTHONFAULTHANDLER": "1"}, stdout=subprocess.DEVNULL)  # SIGABRT: every stack
    log = EtlLog(process)
    try:
        log.wait_for("started")
        metrics = stack_scrape(stack_env, f"https://127.0.0.1:{port}/metrics")  # the stack's scraper certificate
        for dependency in ("sqs", "vault", "database"):
            assert f'etl_dependency_up{{dependency="{dependency}"}} 1.0' in metrics
        time.sleep(1)  # receivers are inside their 20 s long polls now
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # show where it hangs: each thread's stack, then the log's tail
            process.send_signal(signal.SIGABRT)
            process.wait(10)
            raise AssertionError(f"no exit 10 s after SIGTERM:\n{log.tail(6000)}") from None
        assert process.returncode == 0 and time.monotonic() - signalled < 2
    finally:  # a failure above leaves no ETL consuming behind the test
        if process.poll() is None:
            process.kill()
            process.wait(10)
