"""`make up` on a stack that is already there: restart what died, or refuse naming it; `make status`.

Only `make down` deletes the stack's data. When `up` finds a stack whose components are not all
alive, it restarts them in place - Postgres on its data directory (user_logins and the vault's
tables kept), ministack on its port (the queues are recreated empty: ministack keeps messages
in memory only; its IAM users too, with new keys written to stack.env; the ETL is restarted
with it), the two services with their settings - except
OpenBao: its dev server held the key-encryption key and the Transit keys in memory only, so a new
one could not decrypt a single stored value. Then `up` refuses, says so, and leaves everything on disk.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from devstack.envfile import read_env_file, write_env_file
from devstack.isolation import isolation
from devstack.postgres import pg_ctl, postmaster_pid, postmaster_state
from devstack.procs import StackError, alive, port_open, stop_pid, wait_until
from devstack.services import start_etl_service, start_lock_watchdog, start_vault_service
from devstack.sqs import start_sqs
from devstack.stack import StackState, embedded_vault_env, etl_service_env, lock_watchdog_env, sqs_env

ORDER = ("openbao", "postgres", "ministack", "vault_service", "lock_watchdog", "etl_service")


@dataclass(frozen=True)
class Component:
    """One process of the stack as `make status` shows it."""

    name: str
    pid: int | None
    address: str
    alive: bool
    stopping: bool = False
    """Alive but shutting down, refusing new sessions (Postgres in a smart shutdown: `postmaster_state`)."""


def postgres_pid(state: StackState) -> int | None:
    """The postmaster's PID from its pid file, or None when it is not running."""
    if not state.postgres:
        return None
    try:
        pid = postmaster_pid(Path(state.postgres["data_dir"]))
    except (OSError, ValueError, IndexError):
        return None
    return pid if alive(pid) else None


def components(state_dir: Path) -> list[Component]:
    """Every component the stack recorded, with its PID, address and whether it runs."""
    state = StackState.load(state_dir / "state.json")
    env = read_env_file(state_dir / "stack.env") if (state_dir / "stack.env").exists() else {}
    addresses = {
        "openbao": env.get("VAULT_ADDR", ""),
        "postgres": f"127.0.0.1:{state.postgres.get('port', '?')}",
        "ministack": env.get("SQS_ENDPOINT_URL", ""),
        "vault_service": env.get("TOKENVAULT_GRPC_ADDRESS", ""),
        "etl_service": env.get("ETL_METRICS_URL", "(no listener)"),
        "lock_watchdog": "(no listener)",
    }
    found = []
    for name in ORDER:
        pid = postgres_pid(state) if name == "postgres" else state.pids.get(name)
        if name != "postgres" and name not in state.pids:
            continue
        running = pid is not None and alive(pid)
        stopping = running and name == "postgres" and postmaster_state(Path(state.postgres["data_dir"])) == "stopping"
        found.append(Component(name, pid, addresses[name], running, stopping))
    return found


def clear_group(pid: int) -> None:
    """Kill what is left of the process group of a component whose process `pid` died.

    Each component runs in a session of its own (procs.spawn), so its group id is its PID.
    ministack's server runs in a multiprocessing worker: when the process recorded here is
    killed, the worker lives on holding the port, so a new ministack could not bind it while the
    orphan answered in its place (and no `down` would stop it).
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def port_closed(port: int) -> bool:
    """Whether nothing accepts connections on 127.0.0.1:`port` any more."""
    return not port_open(port)


def restart_dead(state_dir: Path) -> list[str]:
    """Restart every component that died (see the module docstring); return their names.

    StackError when OpenBao died (nothing can bring its keys back) or a restart fails.
    """
    state_file = state_dir / "state.json"
    state = StackState.load(state_file)
    env = read_env_file(state_dir / "stack.env")
    dead = [c.name for c in components(state_dir) if not c.alive]
    if "openbao" in dead:
        raise StackError(
            f"openbao (pid {state.pids['openbao']}) has stopped. Its dev server kept the key-encryption key and"
            " the Transit keys in memory only, so no new OpenBao can decrypt the values the vault stored. Nothing"
            f" was deleted ({state_dir}). `make down` deletes the stack and its data; `make up` then starts afresh."
        )
    if "ministack" in dead and "etl_service" not in dead:
        # ministack listens again before its queues are made: an ETL polling in between is told
        # the queue does not exist and stops (a misconfiguration to it). Restart it with ministack.
        stop_pid(state.pids["etl_service"])
        dead.append("etl_service")
    iso = isolation(True)
    for name in dead:
        if name != "postgres":
            clear_group(state.pids[name])
        if name == "postgres":
            data_dir, port = Path(state.postgres["data_dir"]), int(state.postgres["port"])
            pg_ctl(data_dir, Path(state.postgres["bindir"]), state.postgres["run_as"] or None, "start", port)
        elif name == "ministack":
            port = int(env["SQS_ENDPOINT_URL"].rsplit(":", 1)[1])
            wait_until(partial(port_closed, port), f"port {port} of the ministack that died to close", 10)
            sqs = start_sqs(
                state_dir / "logs" / "ministack.log",
                user=iso.user("ministack"),
                home=iso.home(state_dir, "ministack"),
                port=port,
                authenticated=True,
            )
            state.pids["ministack"] = sqs.pid
            env |= sqs_env(sqs)  # new keys: the ETL restarts below with its own
            write_env_file(state_dir / "stack.env", env)
        elif name == "vault_service":
            probe = (Path(env["TLS_CA_CERT"]), Path(env["ETL_TLS_CERT"]), Path(env["ETL_TLS_KEY"]))
            state.pids[name] = start_vault_service(
                embedded_vault_env(env, iso),
                Path(env["VAULT_SERVICE_LOG"]),
                probe,
                iso.user(name),
                iso.home(state_dir, name),
            )
        elif name == "lock_watchdog":  # its earlier log is moved aside by the start
            state.pids[name] = start_lock_watchdog(
                lock_watchdog_env(env), Path(env["LOCK_WATCHDOG_LOG"]), iso.user(name), iso.home(state_dir, name)
            )
        elif name == "etl_service":  # its earlier log is moved aside by the start
            state.pids[name] = start_etl_service(
                etl_service_env(env), Path(env["ETL_SERVICE_LOG"]), iso.user(name), iso.home(state_dir, name)
            )
        state.save(state_file)
    return dead
