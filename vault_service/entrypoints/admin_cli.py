"""`python -m vault_service.admin`: the security team's commands, in a process with the service's credentials.

`tokenvault`'s key commands no longer come here: the running vault does them for the security
team's client certificate (KeyJobs). This stays for a Kubernetes Job under the service's account
started from a reviewed pipeline, and for `audit-verify` / `who-saw`.

Runs with the vault service's environment (same TOKENVAULT_* variables, same Vault AppRole and
database role), e.g. `kubectl exec` into a vault pod or `make admin ARGS=...` on the embedded
stack. Every command that changes something needs `--reason` and is written to the audit log
under the identity of the operator's own Vault token ($VAULT_TOKEN, or the file named by
$VAULT_SECURITY_TOKEN_FILE), as Vault reports it; a token Vault does not know, or without the
`tokenvault-security` policy, is refused. The file must be the operator's alone (exit 2 otherwise, Vault not
asked: tokenvault_common.trusted_files.read_token). `audit-verify` and `who-saw` only read and need no operator
token.

Function API (for other front ends): `authenticate(config, env)` -> OperatorIdentity, then
`with administration(config, operator) as rotation:` -> the KeyRotation audited as that operator,
each operation's intent row anchored before its work (entrypoints/admin_session.py).
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

from psycopg_pool import PoolTimeout
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from tokenvault_common.env import ConfigError
from tokenvault_common.key_status_text import print_key_status
from tokenvault_common.logging_setup import configure_logging
from tokenvault_common.metrics_endpoint import MetricsEndpointError, serve_metrics, tls_context
from vault_service.adapters.operator_identity import (
    OperatorIdentity,
    OperatorRefused,
    OperatorTokenFileRefused,
    authenticate_operator,
    operator_token,
)
from vault_service.adapters.transit import VaultStartupError
from vault_service.adapters.transit_kek_config import TransitKekConfig
from vault_service.config import VaultServiceConfig
from vault_service.domain.admin_reason import unfit_reason
from vault_service.domain.errors import KekVersionsInUse, KeptCopiesDiffer, PermissionDenied, VaultError
from vault_service.domain.tokens import type_of_token
from vault_service.entrypoints.admin_session import administration, exit_status, stop_on_signals
from vault_service.entrypoints.audit_report_cli import audit_verify, audit_who_saw
from vault_service.entrypoints.metrics import ROTATION_ROWS, ROTATION_ROWS_LEFT
from vault_service.service.audit_verify import COPY_LAG_INTERVALS
from vault_service.service.exported_copy import ExportedCopyRefused
from vault_service.service.key_jobs import BATCH_SIZES, MAX_BATCH_SIZE, MIN_BATCH_SIZE
from vault_service.service.rotation import KeyRotation

console = Console(stderr=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vault_service.admin", description=__doc__.splitlines()[0])
    parser.add_argument("--actor", help=argparse.SUPPRESS)  # refused: see main()
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="KEK version, data keys, work left, safe min_decryption_version")
    verify = commands.add_parser(
        "audit-verify",
        help="verify the chain, the signed checkpoints and the exported copy; exit 1 naming the first row concerned",
    )
    verify.add_argument(
        "--exported",
        type=Path,
        default=None,
        help="another copy of the checkpoints exported outside Postgres (the log shipper's), read together with"
        " TOKENVAULT_AUDIT_CHECKPOINT_FILE when that is set (a copy given only adds evidence); default: that file"
        " alone",
    )
    who = commands.add_parser(
        "who-saw", help="which clients revealed or erased a token, when and why (from the verified log)"
    )
    who.add_argument("token", help="a token, e.g. ip_...; for a value, tokenize it first")
    who.add_argument("--exported", type=Path, default=None, help="as for audit-verify")
    for command in (verify, who):
        command.add_argument(
            "--max-copy-lag",
            type=float,
            default=None,
            metavar="SECONDS",
            help=f"how much older the exported copy's newest checkpoint may be than the database's before the"
            f" log is not verified (default: {COPY_LAG_INTERVALS} checkpoint intervals); raise it only for a"
            " known shipping delay",
        )
    for name, text in (
        ("rewrap", "rewrap every data key under the newest KEK version (after a KEK rotation)"),
        (
            "retire-kek-versions",
            "retire the KEK versions below N (after rewrap): Transit's min_decryption_version and"
            " min_encryption_version, with your own token; refused while a data key is wrapped under one",
        ),
        ("rotate-encryption-key", "make a new data encryption key active (then run reencrypt)"),
        ("reencrypt", "move every stored value to the active data key; resumable; retires unused keys"),
        ("rotate-fingerprint-key", "introduce a new fingerprint key (then run reindex)"),
        ("reindex", "fingerprint every value under the new key and make it active; resumable"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument(
            "--reason",
            required=True,
            type=audit_reason,
            help="the change ticket (a reference such as CHG-1234, as a purpose), kept for good in the audit log",
        )
        if name == "retire-kek-versions":
            command.add_argument(
                "--below",
                required=True,
                type=kek_version,
                metavar="N",
                help="the oldest KEK version to keep: min_decryption_version and min_encryption_version become N",
            )
        if name in ("reencrypt", "reindex"):
            command.add_argument(
                "--batch-size",
                type=batch_size,
                default=1000,
                help=f"rows per transaction ({MIN_BATCH_SIZE}-{MAX_BATCH_SIZE})",
            )
            command.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics while running")
    return parser


def audit_reason(text: str) -> str:
    """`--reason`, refused before anything is done unless the audit log may keep it (domain.admin_reason)."""
    unfit = unfit_reason(text)
    if unfit is not None:
        raise argparse.ArgumentTypeError(unfit)
    return text


def batch_size(text: str) -> int:
    """`--batch-size`: rows per transaction, as KeyJobs and the tokenvault command allow (attack 26, F4)."""
    if not text.isdigit() or not MIN_BATCH_SIZE <= int(text) <= MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"a batch size is {BATCH_SIZES}, not {text!r}")
    return int(text)


def kek_version(text: str) -> int:
    """`--below`: a KEK version, 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a KEK version is a whole number from 1 up, not {text!r}")
    return int(text)


def _with_progress(
    phase_total: int, job: Callable[[Callable[[str, int], None]], int], totals: Mapping[str, int] | None = None
) -> int:
    """Run `job` with a progress bar per phase: `totals`' for the phases it names, `phase_total` for the others."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed}/{task.total} rows"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def report(phase: str, done: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=(totals or {}).get(phase, phase_total))
            progress.advance(tasks[phase], done)
            ROTATION_ROWS.labels(phase).inc(done)
            task = progress.tasks[tasks[phase]]
            ROTATION_ROWS_LEFT.labels(phase).set(max(0, int((task.total or 0) - task.completed)))

        return job(report)


def authenticate(config: VaultServiceConfig, env: Mapping[str, str]) -> OperatorIdentity:
    """The operator, as Vault identifies their token; OperatorRefused saying why not."""
    return authenticate_operator(config.vault_address, operator_token(env))


def _run(
    args: argparse.Namespace, config: VaultServiceConfig, rotation: KeyRotation, metrics_tls: ssl.SSLContext | None
) -> int:
    if args.command == "status":
        print_key_status(rotation.status(), console)
        return 0
    if getattr(args, "metrics_port", 0):  # over TLS like the service's when TOKENVAULT_METRICS_TLS_* are set
        serve_metrics(args.metrics_port, "127.0.0.1", metrics_tls, "--metrics-port")
    reason = args.reason
    if args.command == "retire-kek-versions":
        kek = TransitKekConfig(config.vault_address, operator_token(os.environ), config.kek_name, config.transit_mount)
        below = rotation.retire_kek_versions(args.below, reason, kek)
        console.print(
            f"KEK {config.kek_name}: min_decryption_version and min_encryption_version raised to {below}; the versions"
            " below it no longer decrypt (lowering it again brings them back until Vault's operators trim them)"
        )
    elif args.command == "rewrap":
        console.print(f"rewrapped {rotation.rewrap(reason)} data key(s) under the newest KEK version")
    elif args.command == "rotate-encryption-key":
        console.print(f"data key {rotation.rotate_encryption_key(reason)} is now active; run `reencrypt` next")
    elif args.command == "rotate-fingerprint-key":
        console.print(f"fingerprint key {rotation.rotate_fingerprint_key(reason)} is pending; run `reindex` next")
    elif args.command == "reencrypt":
        left = rotation.status().rows_to_reencrypt
        moved = _with_progress(left, lambda report: rotation.reencrypt(reason, args.batch_size, report))
        console.print(f"re-encrypted {moved} value(s); unused data keys retired")
    elif args.command == "reindex":
        status = rotation.status()  # each phase its own count: a re-run resumes (chaos 50, V50-5)
        totals = {"reindex": status.rows_to_reindex, "compact": status.rows_to_compact}
        run = partial(rotation.reindex, reason, args.batch_size)
        done = _with_progress(status.rows_to_reindex, run, totals)
        console.print(f"re-indexed {done} value(s); the new fingerprint key is active")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, connect, run one command. Exit 2 on bad config, 1 on failure."""
    args = _parser().parse_args(argv)
    if args.actor is not None:
        print(
            "vault admin: --actor is refused: the audit log records the identity of your Vault token"
            " (set VAULT_TOKEN after `vault login`, or VAULT_SECURITY_TOKEN_FILE)",
            file=sys.stderr,
        )
        return 2
    if args.command == "who-saw" and type_of_token(args.token) is None:  # not repeated: it may be a value
        print(
            "vault admin: who-saw: the argument is not a token (a type prefix such as ip_ or dev_ and 22"
            " characters): nothing looked for; copy the token whole from user_logins, and for a value,"
            " tokenize it first (as the ETL would)",
            file=sys.stderr,
        )
        return 2
    try:
        config = VaultServiceConfig.from_env(os.environ, serving=False)  # no server certificate: it serves nothing
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    configure_logging("vault_service.admin", os.environ.get("TOKENVAULT_ADMIN_LOG_LEVEL", "WARNING"))
    try:
        if args.command == "audit-verify":
            return audit_verify(config, args.exported, args.max_copy_lag)
        if args.command == "who-saw":
            return audit_who_saw(config, args.token, args.exported, args.max_copy_lag)
        serving: int = getattr(args, "metrics_port", 0)  # only reencrypt and reindex serve metrics
        metrics_tls = tls_context(config.metrics_tls) if serving and config.metrics_tls else None
        operator = authenticate(config, os.environ)
        with stop_on_signals(), administration(config, operator) as rotation:  # the round runs on SIGTERM too
            return _run(args, config, rotation, metrics_tls)
    except KeyboardInterrupt as stop:  # the round has run and said what it could not anchor
        print(
            f"vault admin: {args.command} stopped ({str(stop) or 'Ctrl-C'}) before its end; a reencrypt or reindex"
            " resumes where it stopped when run again",
            file=sys.stderr,
        )
        return exit_status(stop)
    except MetricsEndpointError as error:
        print(f"vault admin: {args.command}: {error}", file=sys.stderr)
        return 2
    except OperatorTokenFileRefused as error:  # a setting to fix, as a bad configuration: Vault was not asked
        print(f"vault admin: {args.command} refused: {error}; nothing was done", file=sys.stderr)
        return 2
    except (OperatorRefused, PermissionDenied) as error:  # PermissionDenied: Vault refused the operator's token
        print(f"vault admin: {args.command} refused: {error}", file=sys.stderr)
        return 3
    except (KekVersionsInUse, KeptCopiesDiffer) as error:
        print(f"vault admin: {args.command} refused: {error}", file=sys.stderr)
        return 1
    except (VaultStartupError, VaultError, PoolTimeout, OSError, ExportedCopyRefused) as error:
        print(f"vault admin: {args.command} failed: {error}", file=sys.stderr)
        return 1
