"""`make psql` / `python -m devstack.psql analyst|admin [psql options]`: psql on the embedded stack.

The stack's DSNs carry `require_auth=scram-sha-256`, which libpq before 16 (Debian 12's psql
15, for one) refuses as an unknown parameter. So psql is not given a DSN: it connects through
the cluster's Unix socket, in the data directory, where no other local user can create one to
pose as Postgres while it is down (the TCP port can be taken by anyone then). The password
travels in psql's environment (readable by the operator and root only), not on its command
line (readable by every local user in /proc/<pid>/cmdline).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from devstack.envfile import read_env_file
from devstack.stack import StackState, state_dir_from_env

ROLES = {"analyst": "PG_ANALYST_DSN", "admin": "PG_ADMIN_DSN"}


def psql_environment(dsn: str, socket_dir: Path) -> dict[str, str]:
    """The PG* variables libpq reads, for the role of `dsn`, over the Unix socket in `socket_dir`."""
    params = conninfo_to_dict(dsn)
    return {
        "PGHOST": str(socket_dir),
        "PGPORT": str(params["port"]),
        "PGUSER": str(params["user"]),
        "PGPASSWORD": str(params["password"]),
        "PGDATABASE": str(params["dbname"]),
        "PGREQUIREAUTH": "scram-sha-256",  # libpq 16+; older ones ignore it
    }


def psql_binary(bindir: Path) -> str:
    """The cluster's own psql when its bin directory has one, else the first on PATH."""
    own = bindir / "psql"
    if own.exists():
        return str(own)
    found = shutil.which("psql")
    if found is None:
        raise SystemExit(f"no psql in {bindir} nor on PATH: install the PostgreSQL client (e.g. postgresql-client)")
    return found


def main(argv: list[str] | None = None) -> int:
    """Exec psql as the given role of the running stack, passing the remaining arguments on."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ROLES:
        print(f"usage: python -m devstack.psql {'|'.join(ROLES)} [psql options]", file=sys.stderr)
        return 2
    state_dir = state_dir_from_env()
    if not (state_dir / "stack.env").exists() or not (state_dir / "state.json").exists():
        print("the stack is not up: run `make up`", file=sys.stderr)
        return 3
    postgres = StackState.load(state_dir / "state.json").postgres
    data_dir = Path(postgres["data_dir"])
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no PGHOSTADDR, PGSERVICE...
    env = {**inherited, **psql_environment(read_env_file(state_dir / "stack.env")[ROLES[args[0]]], data_dir)}
    psql = psql_binary(Path(postgres["bindir"]))
    os.execve(psql, [psql, *args[1:]], env)  # noqa: S606
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
