"""`python -m devstack up|down|status|env|admin`: the embedded stack from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from devstack.envfile import read_env_file
from devstack.procs import StackError
from devstack.restart import components, restart_dead
from devstack.stack import (
    ETL_TAKE_BACK,
    ETL_VISIBILITY,
    down,
    state_dir_from_env,
    take_back_seconds,
    up,
    vault_health_address,
    vault_service_env,
    visibility_seconds,
)
from devstack.trusted_stack import refuse_untrusted_stack_dir
from devstack.vault_health import vault_health
from etl_service.config import DEFAULT_VISIBILITY_SECONDS, MAX_VISIBILITY_SECONDS, MIN_VISIBILITY_SECONDS
from etl_service.service.periodic_take_back import DEFAULT_TAKE_BACK_SECONDS


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and act."""
    parser = argparse.ArgumentParser(prog="devstack", description="tokenvault embedded stack (no Docker)")
    parser.add_argument("command", choices=["up", "down", "status", "env", "admin"])
    parser.add_argument("--no-services", action="store_true", help="start only OpenBao, SQS and Postgres")
    parser.add_argument(
        "--etl-take-back-seconds",
        type=_take_back_seconds,
        metavar="SECONDS",
        help=(
            "up: how often the stack's ETL takes back to login-queue what SQS's redrive moved to the DLQ"
            f" (its ETL_TAKE_BACK_SECONDS; 0 to 86400, 0: never; default {DEFAULT_TAKE_BACK_SECONDS:.0f})."
            " Kept in stack.env as STACK_ETL_TAKE_BACK_SECONDS: a stack that is up keeps the period it"
            " was started with (`make down` first to change it)"
        ),
    )
    parser.add_argument(
        "--etl-visibility-timeout-seconds",
        type=_visibility_seconds,
        metavar="SECONDS",
        help=(
            "up: the lease the stack's ETL takes on each message it receives (its ETL_VISIBILITY_TIMEOUT_SECONDS;"
            f" {MIN_VISIBILITY_SECONDS} to {MAX_VISIBILITY_SECONDS}; default {DEFAULT_VISIBILITY_SECONDS}): how long"
            " a message an ETL received and never deleted stays invisible, which `make run` names when it waits for"
            " one. Kept in stack.env as STACK_ETL_VISIBILITY_TIMEOUT_SECONDS, as the take-back period"
        ),
    )
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "admin":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    for option in ("etl_take_back_seconds", "etl_visibility_timeout_seconds"):
        if getattr(args, option) is not None and args.command != "up":
            parser.error(f"--{option.replace('_', '-')} is an option of `up` only")
    state_dir = state_dir_from_env()
    env_file = state_dir / "stack.env"
    if args.command == "up":
        existing = (state_dir / "state.json").exists() and env_file.exists()
        try:
            if existing:
                refuse_untrusted_stack_dir(state_dir)  # as up() does for a fresh stack (walk44, W44-4)
                restarted = restart_dead(state_dir)
                print(f"restarted: {', '.join(restarted)}" if restarted else "the stack was already up")
                stack_env = read_env_file(env_file)
                _say_kept(
                    "--etl-take-back-seconds",
                    args.etl_take_back_seconds,
                    stack_env.get(ETL_TAKE_BACK),
                    DEFAULT_TAKE_BACK_SECONDS,
                    "period",
                )
                _say_kept(
                    "--etl-visibility-timeout-seconds",
                    args.etl_visibility_timeout_seconds,
                    stack_env.get(ETL_VISIBILITY),
                    DEFAULT_VISIBILITY_SECONDS,
                    "lease",
                )
            else:
                period = DEFAULT_TAKE_BACK_SECONDS if args.etl_take_back_seconds is None else args.etl_take_back_seconds
                lease = args.etl_visibility_timeout_seconds or DEFAULT_VISIBILITY_SECONDS
                up(state_dir, not args.no_services, etl_take_back_seconds=period, etl_visibility_seconds=lease)
        except StackError as error:
            print(f"stack {'not restarted' if existing else 'failed to start'}: {error}", file=sys.stderr)
            return 1
        print(f"stack is up; settings in {env_file}  (set -a; . {env_file}; set +a)")
        return 0
    if args.command == "down":
        stopped = down(state_dir)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0
    if args.command == "status":
        return _status(state_dir)
    if not env_file.exists():
        print("the stack is not up: run `make up`", file=sys.stderr)
        return 3
    if args.command == "admin":  # the security team's commands, in the vault service's environment
        stack_env = read_env_file(env_file)
        # Audited under the identity of the operator's Vault token: $VAULT_TOKEN if set, else the
        # stack's security-team token.
        operator = {"VAULT_SECURITY_TOKEN_FILE": stack_env["VAULT_SECURITY_TOKEN_FILE"]}
        service_env = {**operator, **os.environ, **vault_service_env(stack_env)}
        os.execve(sys.executable, [sys.executable, "-m", "vault_service.admin", *rest], service_env)  # noqa: S606
    for key, value in read_env_file(env_file).items():
        print(f"{key}={value}")
    return 0


def _take_back_seconds(text: str) -> float:
    try:
        return take_back_seconds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _visibility_seconds(text: str) -> int:
    try:
        return visibility_seconds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _say_kept(option: str, asked: float | None, kept: str | None, default: float, what: str) -> None:
    """On stderr, when `option` asked another value than the running stack's ETL was started with (`kept`).

    `kept` is the value stack.env keeps; none when the stack was started before it was kept, with the ETL's
    `default`. `what` names the setting in the message ("period", "lease").
    """
    kept_value = float(kept) if kept is not None else default
    if asked is not None and asked != kept_value:
        print(
            f"{option} {asked:g} not applied: the stack's ETL keeps the {what} it was started with"
            f" ({kept_value:g} s); `make down` first to change it",
            file=sys.stderr,
        )


def _status(state_dir: Path) -> int:
    """Each component, its PID and address; exit 0 when all run, 3 otherwise."""
    if not (state_dir / "state.json").exists():
        print(f"down (no stack in {state_dir})")
        return 3
    found = components(state_dir)
    for component in found:
        state = "STOPPING" if component.stopping else "up  " if component.alive else "DEAD"
        print(f"{state}  {component.name:14} pid {component.pid or '-':<8} {component.address}")
    every = all(c.alive and not c.stopping for c in found)
    serving = True
    if any(c.name == "vault_service" and c.alive for c in found):  # its PID alone says nothing of its checks (W47-2)
        serving, said = vault_health(vault_health_address(state_dir))
        print(f"vault_service health: {said}")
        if not serving:
            print(
                f"  why: the vault's log ({state_dir / 'logs' / 'vault_service.log'}); the database's catalog altered"
                " is README's *When the vault will not start, or reports its database unhealthy*"
            )
    if any(c.stopping for c in found):
        print(
            "degraded: postgres is shutting down (a smart shutdown, SIGTERM: it waits for the sessions open on it and"
            " refuses new ones); once it has stopped, `make up` starts it again on its data"
        )
    elif not every:
        print("degraded: `make up` restarts what died (or says why it cannot)")
    elif not serving:
        print("degraded: the vault service runs but does not serve as ready (above)")
    else:
        print("up")
    return 0 if every and serving else 3


if __name__ == "__main__":
    sys.exit(main())
