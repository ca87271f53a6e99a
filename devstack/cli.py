"""`python -m devstack up|down|status|env|admin`: the embedded stack from the command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from devstack.envfile import read_env_file
from devstack.procs import StackError
from devstack.restart import components, restart_dead
from devstack.stack import down, state_dir_from_env, up, vault_service_env
from devstack.trusted_stack import refuse_untrusted_stack_dir


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and act."""
    parser = argparse.ArgumentParser(prog="devstack", description="tokenvault embedded stack (no Docker)")
    parser.add_argument("command", choices=["up", "down", "status", "env", "admin"])
    parser.add_argument("--no-services", action="store_true", help="start only OpenBao, SQS and Postgres")
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "admin":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    state_dir = state_dir_from_env()
    env_file = state_dir / "stack.env"
    if args.command == "up":
        existing = (state_dir / "state.json").exists() and env_file.exists()
        try:
            if existing:
                refuse_untrusted_stack_dir(state_dir)  # as up() does for a fresh stack (walk44, W44-4)
                restarted = restart_dead(state_dir)
                print(f"restarted: {', '.join(restarted)}" if restarted else "the stack was already up")
            else:
                up(state_dir, with_services=not args.no_services)
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


def _status(state_dir: Path) -> int:
    """Each component, its PID and address; exit 0 when all run, 3 otherwise."""
    if not (state_dir / "state.json").exists():
        print(f"down (no stack in {state_dir})")
        return 3
    found = components(state_dir)
    for component in found:
        state = "up  " if component.alive else "DEAD"
        print(f"{state}  {component.name:14} pid {component.pid or '-':<8} {component.address}")
    every = all(c.alive for c in found)
    print("up" if every else "degraded: `make up` restarts what died (or says why it cannot)")
    return 0 if every else 3


if __name__ == "__main__":
    sys.exit(main())
