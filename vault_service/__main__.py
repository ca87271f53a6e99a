"""Run the token vault gRPC server: `python -m vault_service` (configured by environment)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from psycopg_pool import PoolTimeout

from tokenvault_common.env import ConfigError
from tokenvault_common.exit_watchdog import exit_within
from tokenvault_common.logging_setup import configure_logging
from tokenvault_common.metrics_endpoint import MetricsEndpointError, serve_metrics, tls_context
from tokenvault_common.runtime import tune_for_throughput
from tokenvault_common.settings_help import settings_help
from vault_service import config as config_module
from vault_service.adapters.client_crl_lists import InvalidRevocationList
from vault_service.adapters.transit import VaultStartupError
from vault_service.bootstrap import bootstrap
from vault_service.config import VaultServiceConfig
from vault_service.domain.errors import VaultError
from vault_service.entrypoints.audit_report_session import audit_reports_of
from vault_service.entrypoints.health_listener import create_health_server
from vault_service.entrypoints.health_socket import UnsafeHealthSocket, unix_socket_path
from vault_service.entrypoints.health_socket import prepare as prepare_health_socket
from vault_service.entrypoints.key_job_session import key_jobs_of
from vault_service.entrypoints.metrics import register_vault_metrics
from vault_service.entrypoints.server import create_server, server_credentials
from vault_service.service.maintenance import DATABASE, ErasedTokensUnread

log = logging.getLogger("vault_service")

STOP_GRACE_SECONDS = 10.0
"""After SIGTERM, how long calls in flight may take to finish."""
EXIT_AFTER_UPKEEP_SECONDS = 5.0
"""Once the last audit upkeep round has run (its rows and checkpoint are never cut short here: review 23,
R23-3), the pools close and the process exits within this, or is ended (exit_watchdog, status 1)."""
KEY_JOB_STOP_SECONDS = 10.0
"""After SIGTERM, how long a running key job (KeyJobs) may take to end its batch and record its outcome."""

EXIT_CODES = """exit status:
  0  stopped by SIGTERM/SIGINT, in-flight calls finished
  1  cannot start: Vault, the database or the access policy refused or failed (the message says which);
     or still running 5 s after its last audit round at a stop (each thread's stack is on stderr)
  2  invalid settings (every problem named at once), or a metrics endpoint, revocation list or
     health socket (a directory or path another uid could reach or replace) that cannot work as set"""


def _parse_arguments(argv: list[str] | None) -> None:
    """`--help` prints every setting and exits; the service takes no other argument."""
    parser = argparse.ArgumentParser(
        prog="python -m vault_service",
        description="The token vault's gRPC server (mTLS), configured by environment variables alone.",
        epilog=f"{settings_help(Path(config_module.__file__), 'VaultServiceConfig')}\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start, serve until SIGTERM/SIGINT, stop gracefully. Exit 2 on bad config, 1 on failed start."""
    _parse_arguments(argv)
    try:
        config = VaultServiceConfig.from_env(os.environ)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    configure_logging("vault_service", config.log_level)
    if config.health_address and (socket_path := unix_socket_path(config.health_address)):
        try:  # before anything starts: a socket another uid could reach or replace stops the service now
            prepare_health_socket(socket_path)
        except UnsafeHealthSocket as error:
            print(f"vault_service: {error} (TOKENVAULT_HEALTH_ADDRESS)", file=sys.stderr)
            return 2
    try:  # before anything starts: a metrics setting that cannot work stops the service now
        metrics_context = tls_context(config.metrics_tls) if config.metrics_port and config.metrics_tls else None
    except MetricsEndpointError as error:
        print(f"vault_service: {error}", file=sys.stderr)
        return 2
    try:
        wired = bootstrap(config)
    except (VaultStartupError, VaultError, PoolTimeout, OSError) as error:
        log.error("cannot start: %s", error)
        print(f"vault_service: cannot start: {error}", file=sys.stderr)
        return 1
    credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
    key_jobs = key_jobs_of(wired, config)
    try:
        running = create_server(
            wired.vault,
            config.grpc_address,
            credentials,
            config.tls_client_ca.read_bytes(),
            config.workers,
            config.tls_client_crl,
            config.max_calls_per_client,
            config.max_connection_age_seconds,
            config.request_read_seconds,
            config.handshake_seconds,
            key_jobs=key_jobs,
            audit_reports=audit_reports_of(wired, config),
            exported_copy=config.audit_checkpoint_file is not None,
        )
    except InvalidRevocationList as error:
        wired.close()
        print(f"vault_service: {error}", file=sys.stderr)
        return 2
    maintainer = wired.maintainer(running.reporter, config.key_check_seconds)
    upkeep = wired.audit_upkeep(
        config.audit_checkpoint_seconds, config.audit_checkpoint_file, config.audit_unchecked_seconds
    )
    if config.metrics_port:
        register_vault_metrics(wired.vault.cache, wired.token_store)
        try:
            serve_metrics(config.metrics_port, config.metrics_address, metrics_context, "TOKENVAULT_METRICS_PORT")
        except MetricsEndpointError as error:
            wired.close()
            print(f"vault_service: {error}", file=sys.stderr)
            return 2
    running.starting()  # not ready until it serves (the erase rows are read first)
    health_server = None
    if config.health_address:
        try:
            health_server, _ = create_health_server(running.health, config.health_address, config.request_read_seconds)
        except UnsafeHealthSocket as error:
            wired.close()
            print(f"vault_service: {error} (TOKENVAULT_HEALTH_ADDRESS)", file=sys.stderr)
            return 2
        health_server.start()
    tune_for_throughput()
    try:
        maintainer.start()  # the erasure mark and the erased tokens are read before any call can be served
    except ErasedTokensUnread as error:
        log.error("cannot start: %s", error)
        print(f"vault_service: cannot start: {error}", file=sys.stderr)
        if health_server is not None:
            health_server.stop(grace=0).wait()
        wired.close()
        return 1
    running.server.start()
    running.report(DATABASE, maintainer.healthy[DATABASE])  # ready from now on, unless a round found it down
    upkeep.start()
    log.info("serving", extra={"port": running.port, "metrics_port": config.metrics_port})
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    stopping.wait()
    log.info("stopping: finishing in-flight calls")
    if not key_jobs.stop("the vault service is stopping (SIGTERM)", KEY_JOB_STOP_SECONDS):
        log.warning(
            "a key job did not stop within %.0f s; it ends with the process (a re-run resumes it)", KEY_JOB_STOP_SECONDS
        )
    running.server.stop(grace=STOP_GRACE_SECONDS).wait()
    if health_server is not None:
        health_server.stop(grace=1).wait()
    maintainer.stop()
    upkeep.stop()  # last aggregated rows and a checkpoint of the final head
    exit_within(EXIT_AFTER_UPKEEP_SECONDS)  # the platform's grace period bounds what came before
    wired.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
