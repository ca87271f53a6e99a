"""A service's database DSN may not hand its password to whatever answers on the database's port.

libpq sends a DSN's password to any server that asks for it, in clear if it asks so. A local user
listening on Postgres's port while it is down (or a server that is not ours) then has it (attack
25: the exercise profile's ETL DSN had neither setting below). A DSN that holds a password must
therefore make libpq authenticate the server or refuse to send the password: `sslmode=verify-full`
(the server proves it is ours with the CA's certificate for its name), or `require_auth` allowing
no method that sends the password or an MD5 of it (`scram-sha-256`: the server proves it holds the
SCRAM verifier; the password never leaves), or `channel_binding=require` (SCRAM bound to TLS).
A DSN without a password (peer, certificate or trust authentication), or one that reaches the
server only over unix sockets (a path only local accounts with the socket directory's permission
reach), is not concerned. The same settings given as libpq's environment variables count, and a
`passfile` (or PGPASSFILE) counts as a password; a default ~/.pgpass is not looked for.
"""

from __future__ import annotations

from collections.abc import Mapping

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

from tokenvault_common.env import EnvReader

_ENV = {
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "sslmode": "PGSSLMODE",
    "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING",
}
"""The libpq environment variable behind each setting that decides (used when the DSN leaves it out)."""
_SENDS_THE_PASSWORD = frozenset({"password", "md5"})
"""Authentication methods in which the client sends the password, or a hash a listener can replay or crack."""
FIX = (
    "add require_auth=scram-sha-256 to it (?require_auth=scram-sha-256 on a postgresql:// URL; libpq 16+),"
    " or sslmode=verify-full with the database's CA, or connect over the unix socket or without a password"
)
"""What to do about a DSN refused here."""


def _setting(params: Mapping[str, object], env: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        value = env.get(_ENV[name], "")
    return str(value).strip()


def _only_unix_sockets(params: Mapping[str, object], env: Mapping[str, str]) -> bool:
    if _setting(params, env, "hostaddr"):
        return False  # a numeric address: TCP whatever `host` says
    hosts = [h.strip() for h in _setting(params, env, "host").split(",")]
    return all(host == "" or host.startswith(("/", "@")) for host in hosts)  # libpq's default is the socket


def _require_auth_keeps_the_password(methods: str) -> bool:
    """Whether a `require_auth` list lets no method send the password or its MD5 hash."""
    listed = [m.strip().lower() for m in methods.split(",") if m.strip()]
    if not listed:
        return False
    if all(m.startswith("!") for m in listed):  # every method but these
        return {m[1:] for m in listed} >= _SENDS_THE_PASSWORD
    return not _SENDS_THE_PASSWORD & set(listed)


def password_exposed(variable: str, dsn: str, env: Mapping[str, str]) -> str | None:
    """Why `variable`'s `dsn` could send its password to an impostor (with the fix); None when it cannot.

    `env` is the process's environment (libpq's PG* variables). The message never quotes the DSN.
    """
    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        return f"{variable} is not a connection string libpq can read (a postgresql:// URL or key=value pairs)"
    has_password = _setting(params, env, "password") or _setting(params, env, "passfile")
    if not has_password or _only_unix_sockets(params, env):
        return None
    if _setting(params, env, "sslmode").lower() == "verify-full":
        return None
    if _setting(params, env, "channel_binding").lower() == "require":
        return None
    if _require_auth_keeps_the_password(_setting(params, env, "require_auth")):
        return None
    return (
        f"{variable} holds a database password but neither sslmode=verify-full nor a require_auth that"
        " refuses password and md5: libpq would send the password to whatever answers on the database's"
        f" address, in clear if it asks (a local listener on the port while PostgreSQL is down); {FIX}"
    )


def read_database_dsn(read: EnvReader, env: Mapping[str, str], variable: str) -> str:
    """`variable`'s DSN (required); a DSN that could send its password to an impostor is one of `read`'s problems."""
    dsn = read.text(variable)
    if dsn and (problem := password_exposed(variable, dsn, env)):
        read.problems.append(problem)
    return dsn
