"""A service's database DSN may not hand a password to whatever answers on the database's port.

libpq sends a password to any server that asks for it, in clear if it asks so. A local user
listening on Postgres's port while it is down (or a server that is not ours) then has it (attack
25: the exercise profile's ETL DSN had neither setting below). libpq finds that password in more
places than the DSN: `PGPASSWORD`, a `passfile` (`PGPASSFILE`, by default `~/.pgpass`) and the entry
of a named service (`service=` or `PGSERVICE`, read from `PGSERVICEFILE`, `~/.pg_service.conf` or
`PGSYSCONFDIR/pg_service.conf`), which can also add a host or a `hostaddr` (review 28, F1). This
check cannot see all of them, so every DSN that may reach the server over TCP must make libpq
authenticate the server or refuse to send the password, whether or not a password is visible:
`sslmode=verify-full` (the server proves it is ours with the CA's certificate for its name; also
`sslrootcert=system`, with which libpq 16+ allows no weaker sslmode), or a `require_auth` allowing
no method that sends the password or an MD5 of it (`scram-sha-256`), or `channel_binding=require`
(SCRAM bound to TLS). SCRAM keeps the password off the wire but not safe: an impostor that asks
for it gets a proof computed with a salt and iteration count of its choosing, which it can
brute-force offline (review 28, F3). That is harmless for a generated random password (the stack's
and compose's), not for one a person chose: for those, only `sslmode=verify-full` protects.
A DSN that reaches the server only over unix sockets and names no service is not concerned, if
no other local user can put a socket where libpq looks: a socket directory (the host's path, or
libpq's built-in one for an empty host) that others can write to (`/tmp`, upstream PostgreSQL's
default, sticky or not; or, when it does not exist, whose nearest existing parent they can write
to), or an abstract socket (`@name`, which any local user can bind first), lets one catch the
password in clear while PostgreSQL is down (review 29, F4). So does a directory another user owns,
or one below a directory another user owns or may write to (attack 32, F8: a neighbour's 0755
directory): the directory and every one above it must be root's, PostgreSQL's account's or this
process's user's and written by no one else (_unsafe_directory). Such a DSN needs a `require_auth` that
refuses password and md5 (TLS settings do nothing over a unix socket). libpq's environment
variables count for the settings above, except when a service is named: its entry then takes
precedence over them, so only the DSN's own values count.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from psycopg import ProgrammingError, pq
from psycopg.conninfo import conninfo_to_dict

from tokenvault_common.env import EnvReader
from tokenvault_common.file_system import FileSystem, Unresolvable, chain, links_on_the_way

_ENV = {
    "service": "PGSERVICE",
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING",
}
"""The libpq environment variable behind each setting that decides (used when the DSN leaves it out)."""
_SENDS_THE_PASSWORD = frozenset({"password", "md5"})
"""Authentication methods in which the client sends the password, or a hash a listener can replay or crack."""
_SYSTEM_ROOT_CERT_LIBPQ = 160000
"""From libpq 16, `sslrootcert=system` forces `verify-full`; before, it names a file and checks nothing."""
FIX = (
    "add sslmode=verify-full with the database's CA to it, or require_auth=scram-sha-256"
    " (?require_auth=scram-sha-256 on a postgresql:// URL; libpq 16+) when the password is generated and random"
    " (an impostor gets a SCRAM proof it can brute-force offline), or connect over the unix socket"
)
"""What to do about a DSN refused here."""
SOCKET_FIX = (
    "point host at a socket directory only PostgreSQL's account can write to (its unix_socket_directories,"
    " such as /var/run/postgresql: it and every directory above it owned by root, PostgreSQL's account or"
    " this process's user, and written by no one else), or add require_auth=scram-sha-256 (libpq 16+; TLS"
    " settings do nothing over a unix socket) when the password is generated and random"
)
"""What to do about a unix-socket DSN refused here (review 29, F4)."""


def _setting(params: Mapping[str, object], env: Mapping[str, str], name: str) -> str:
    """The DSN's `name` when the DSN has the keyword, even empty (libpq keeps it); else its PG* variable's.

    libpq takes a variable only for a keyword the DSN leaves out: `sslrootcert=` (empty) with
    `PGSSLROOTCERT=system` is an empty sslrootcert, not `system` (attack 27, F4: read as `system`,
    that DSN passed and sent the password in clear).
    """
    value = params.get(name)
    if value is None:
        value = env.get(_ENV[name], "")
    return str(value).strip()


def _only_unix_sockets(params: Mapping[str, object], env: Mapping[str, str]) -> bool:
    if _setting(params, env, "hostaddr"):
        return False  # a numeric address: TCP whatever `host` says
    hosts = [h.strip() for h in _setting(params, env, "host").split(",")]
    return all(host == "" or host.startswith(("/", "@")) for host in hosts)  # libpq's default is the socket


_NEUTRAL_CONNINFO = b"port=1 dbname=x user=x passfile=/nonexistent/pgpass connect_timeout=1"
"""A connection start that names no host (libpq's built-in socket directory) and sends nothing secret."""
_LIBPQ_HOST_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGSERVICE")


@functools.cache
def _default_socket_directory() -> str | None:
    """The built-in socket directory of libpq (psycopg-binary's /var/run/postgresql, upstream's /tmp); None if unknown.

    libpq exposes it only as the host of a connection started without one: that start connects to the
    socket (absent on port 1) and sends at most a startup message naming user x, never a password.
    """
    if any(os.environ.get(name) for name in _LIBPQ_HOST_VARIABLES):
        return None  # libpq would take the host from them, not from its default
    conn = pq.PGconn.connect_start(_NEUTRAL_CONNINFO)
    try:
        host = (conn.host or b"").decode()
    finally:
        conn.finish()
    return host if host.startswith("/") else None


POSTGRES_ACCOUNT = "postgres"
"""The operating-system account PostgreSQL runs as (its packages' and the embedded stack's): its directories count."""


def _group_of_this_user_alone(gid: int, uid: int) -> bool:
    """Whether no account but `uid`'s (this process's user, root, postgres) is in group `gid` (primary or listed).

    A user-private group passes, as does a gid of no account's (a container's `user: "10001:10001"`).

    A group that people share (SUSE's `users`, gid 100) lets every one of them write a directory it may write: a
    socket directory root:users 0775 passed, and any member could plant the socket (review 36, R36-5).
    """
    try:
        me: str | None = pwd.getpwuid(uid).pw_name
    except KeyError:
        me = None
    try:
        listed = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        listed = set()
    if listed - {me}:
        return False
    return all(account.pw_uid == uid for account in pwd.getpwall() if account.pw_gid == gid)


def _trusted_ids(euid: int | None = None, egid: int | None = None) -> tuple[frozenset[int], frozenset[int]]:
    """The uids whose directories count (root, PostgreSQL's account, this process's) and the gids whose writing does.

    The gids: root's, PostgreSQL's account's and this process's group, each only when no account but its own (root,
    postgres, this process's user) is in it - listed as a member or as its primary group (_group_of_this_user_alone).
    Review 36 (R36-5) applied that to this process's group; PostgreSQL's account's group was still trusted whoever was
    in it: Debian's socket directory /var/run/postgresql is postgres:postgres 2775, and an administrator added to
    group postgres (to read its files) could unlink the server's socket and plant one during a restart, catching the
    password (attack 35, N2). Root's group likewise: an account in it may write whatever root's group may write.
    On RHEL-family systems the nologin accounts sync, shutdown, halt and operator have gid 0 as their primary group,
    so root's group counts as shared there and a root:root directory its group may write is refused (such directories
    are unusual: 0755 serves). `euid`, `egid`: this process's unless given.
    """
    euid = os.geteuid() if euid is None else euid
    egid = os.getegid() if egid is None else egid
    uids: set[int] = {0, euid}
    candidates = [(egid, euid), (0, 0)]
    try:
        account = pwd.getpwnam(POSTGRES_ACCOUNT)
    except KeyError:
        pass
    else:
        uids.add(account.pw_uid)
        candidates.append((account.pw_gid, account.pw_uid))
    gids = {gid for gid, owner in candidates if _group_of_this_user_alone(gid, owner)}
    return frozenset(uids), frozenset(gids)


def _owner(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _unsafe_directory(directory: str, fs: FileSystem | None = None) -> str | None:
    """Why another local user could put a socket in `directory` (or make it), described; None when none could.

    Safe: the directory (or, while it does not exist, its nearest existing parent, where whoever may write could
    make it) and every directory above it up to `/` - as named, as its symbolic links resolve, and above each
    symbolic link met on the way, whose own owner must be trusted too (attack 39, P4's hop) - are owned by
    root, PostgreSQL's account or this process's user, and written by no one else: not by others, nor by a group
    but root's, PostgreSQL's account's or this process's, each when no other account is in it (Debian's
    /var/run/postgresql is postgres:postgres 2775; a group people share is others: _trusted_ids). A
    directory above it that others may write to is safe only with its sticky bit (/tmp) and the next directory down
    theirs: others may then neither rename nor remove it. The directory itself may not be others' to write, sticky
    or not: they could add the socket (attack 32, F8: a directory of another user's, 0755, gave it the password).
    An access ACL whose mask allows writing counts as others writing (attack 33, A2: `user:nobody:rwx` on a root's
    0755 directory made it read 0775 root:root, and nobody caught the password).
    """
    fs = fs or FileSystem()
    uids, gids = _trusted_ids()
    trusted = f"root, PostgreSQL's account ({POSTGRES_ACCOUNT}) or this process's user"
    path = os.path.abspath(directory)
    while True:
        try:
            fs.stat(path)
            break
        except FileNotFoundError:
            if os.path.dirname(path) == path:
                return "no directory of it exists"
            path = os.path.dirname(path)  # whoever can write the nearest existing parent can create it
        except OSError:
            return f"{path} cannot be examined"
    try:
        links, resolved = links_on_the_way(path, fs)
    except Unresolvable as error:
        return str(error)
    # As named, above every link met on the way (a link's own owner may re-point it: attack 39, P4), as resolved.
    chains = [(chain(path), False), *((chain(link), True) for link in links), (chain(resolved), False)]
    for steps, ends_in_link in chains:
        for i, current in enumerate(steps):
            link = ends_in_link and i == len(steps) - 1
            try:
                info = fs.lstat(current) if link else fs.stat(current)
            except OSError:
                return f"{current} cannot be examined"
            if info.st_uid not in uids and link:
                owner = _owner(info.st_uid)
                return f"{current} is a symbolic link owned by {owner}, not {trusted}: that account may re-point it"
            if info.st_uid not in uids:
                return f"{current} is owned by {_owner(info.st_uid)}, not {trusted}"
            if link:  # its mode means nothing: only its owner, and its directory's writers (checked above), change it
                continue
            writers = "others" if info.st_mode & stat.S_IWOTH else ""
            if not writers and info.st_mode & stat.S_IWGRP and info.st_gid not in gids:
                writers = f"its group (gid {info.st_gid})"
            if not writers and info.st_mode & stat.S_IWGRP and fs.has_access_acl(current):
                writers = "the users or groups its access ACL names (its mask allows writing)"  # attack 33, A2
            if not writers:
                continue
            if i == len(steps) - 1:
                return f"{current} may be written by {writers}"
            child = steps[i + 1]
            try:
                below = fs.lstat(current.rstrip("/") + "/" + child.rsplit("/", 1)[1])
            except OSError:
                return f"{child} cannot be examined"
            if not info.st_mode & stat.S_ISVTX:
                return f"{current} may be written by {writers}, who could replace {child} in it"
            if below.st_uid not in uids:
                return f"{child} is owned by {_owner(below.st_uid)}, not {trusted}"
    return None


def _plantable_socket(params: Mapping[str, object], env: Mapping[str, str], names_a_service: bool) -> str | None:
    """The first socket of the DSN another local user could put in place of PostgreSQL's (described); None if none."""
    if _setting(params, env, "hostaddr"):
        return None  # TCP whatever `host` says
    host_setting = str(params.get("host") or "") if names_a_service else _setting(params, env, "host")
    for host in (h.strip() for h in host_setting.split(",")):
        if host.startswith("@"):
            return "an abstract unix socket (any local user can bind its name first)"
        if host == "" and not names_a_service:  # a service's entry may give the host
            directory = _default_socket_directory()
            if directory is None:
                return "libpq's default socket directory (unknown), which other local users may write to"
            if unsafe := _unsafe_directory(directory):
                return f"libpq's default socket directory ({directory}: {unsafe})"
        elif host.startswith("/") and (unsafe := _unsafe_directory(host)):
            return f"a unix socket in {host} ({unsafe})"
    return None


def _require_auth_keeps_the_password(methods: str) -> bool:
    """Whether a `require_auth` list lets no method send the password or its MD5 hash."""
    listed = [m.strip().lower() for m in methods.split(",") if m.strip()]
    if not listed:
        return False
    if all(m.startswith("!") for m in listed):  # every method but these
        return {m[1:] for m in listed} >= _SENDS_THE_PASSWORD
    return not _SENDS_THE_PASSWORD & set(listed)


def _keeps_the_password(params: Mapping[str, object], env: Mapping[str, str]) -> bool:
    """Whether the settings (the DSN's, then `env`'s) make libpq authenticate the server or withhold the password."""
    if _setting(params, env, "sslmode").lower() == "verify-full":
        return True
    if _setting(params, env, "sslrootcert") == "system" and pq.version() >= _SYSTEM_ROOT_CERT_LIBPQ:
        return True  # libpq refuses to connect with any other sslmode
    if _setting(params, env, "channel_binding").lower() == "require":
        return True
    return _require_auth_keeps_the_password(_setting(params, env, "require_auth"))


def password_exposed(variable: str, dsn: str, env: Mapping[str, str]) -> str | None:
    """Why `variable`'s `dsn` could send a password to an impostor (with the fix); None when it cannot.

    `env` is the process's environment (libpq's PG* variables). The message never quotes the DSN.
    """
    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        return f"{variable} is not a connection string libpq can read (a postgresql:// URL or key=value pairs)"
    names_a_service = bool(_setting(params, env, "service"))
    # A service's entry fills what the DSN leaves out before libpq looks at PG* variables.
    settings = {} if names_a_service else env
    if (names_a_service or not _only_unix_sockets(params, env)) and not _keeps_the_password(params, settings):
        return (
            f"{variable} may reach the database over TCP (a host, a hostaddr or a named service) with neither"
            " sslmode=verify-full, a require_auth that refuses password and md5, nor channel_binding=require:"
            " libpq would send a password (from the DSN, PGPASSWORD, ~/.pgpass or a service file) to whatever"
            f" answers on the database's address, in clear if it asks (a local listener on the port while"
            f" PostgreSQL is down); {FIX}"
        )
    plantable = _plantable_socket(params, env, names_a_service)
    if plantable and not _require_auth_keeps_the_password(_setting(params, settings, "require_auth")):
        return (
            f"{variable} may reach the database over {plantable}: another local user could put its own socket"
            " there while PostgreSQL is down, and libpq would send it a password (from the DSN, PGPASSWORD or"
            f" ~/.pgpass), in clear if it asks; {SOCKET_FIX}"
        )
    return None


def read_database_dsn(read: EnvReader, env: Mapping[str, str], variable: str) -> str:
    """`variable`'s DSN (required); a DSN that could send a password to an impostor is one of `read`'s problems."""
    dsn = read.text(variable)
    if dsn and (problem := password_exposed(variable, dsn, env)):
        read.problems.append(problem)
    return dsn


class DsnFileError(Exception):
    """A DSN file that cannot be read, is empty, or holds a DSN refused above; the message never quotes the DSN."""


def read_dsn_file(path: Path, variable: str, env: Mapping[str, str]) -> str:
    """The DSN in the file `path` names (`variable`), checked as every DSN is (password_exposed).

    For credentials that rotate while the process runs - Vault's database secrets engine, rendered into the file
    by the Vault agent and rendered again with a new login and password as each lease ends (docs/production.md):
    read it at every (re)connection, never once at the start. DsnFileError when it cannot be used.
    """
    try:
        dsn = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else type(error).__name__
        raise DsnFileError(f"{variable} {path} cannot be read: {reason}") from None
    if not dsn:
        raise DsnFileError(f"{variable} {path} is empty")
    if problem := password_exposed(f"the DSN in {variable} {path}", dsn, env):
        raise DsnFileError(problem)
    return dsn


Conninfo: TypeAlias = str | Callable[[], str]
"""A DSN, or what gives it at each new connection (a DsnFile): what psycopg_pool's ConnectionPool takes as conninfo
(it calls a callable for every connection it opens)."""


@dataclass(frozen=True)
class DsnFile:
    """A file holding a service's DSN, read and checked (read_dsn_file) at each call: once per new connection.

    `variable` is the setting that names it (its errors say it); `env`, libpq's environment for the check. Its repr
    shows neither the DSN (never read here) nor `env` (which holds other secrets).
    """

    path: Path
    variable: str
    env: Mapping[str, str] = field(repr=False, compare=False)

    def __call__(self) -> str:
        """The DSN in the file now; DsnFileError when it cannot be used."""
        return read_dsn_file(self.path, self.variable, self.env)


def conninfo_now(conninfo: Conninfo) -> str:
    """The DSN `conninfo` gives for a connection opened now (a DsnFile is read again: DsnFileError)."""
    return conninfo() if callable(conninfo) else conninfo


def read_dsn_setting(read: EnvReader, env: Mapping[str, str], variable: str) -> tuple[str, DsnFile | None]:
    """`variable`'s DSN, or the DsnFile `variable`_FILE names: exactly one of the two (else one of `read`'s problems).

    (dsn, None) for the variable; ("", the file) for the file, which must be there and hold a DSN that passes the
    same checks (read_dsn_file) - then and at every new connection. The file is how credentials that rotate while
    the process runs (Vault's database secrets engine, rendered by the Vault agent) reach it: the DSN read once, a
    new connection after the old login was dropped failed until the process restarted (review 34, R34-12).
    """
    file_variable = f"{variable}_FILE"
    path = read.existing_file(file_variable, required=False)
    if path is None:
        if read.optional(variable) is None:
            read.problems.append(f"{variable} is required but not set (or {file_variable}, a file holding it)")
            return "", None
        return read_database_dsn(read, env, variable), None
    if read.optional(variable) is not None:
        read.problems.append(f"set {variable} or {file_variable}, not both")
    dsn_file = DsnFile(path, file_variable, env)
    if path.is_file():
        try:
            dsn_file()
        except DsnFileError as error:
            read.problems.append(str(error))
    return "", dsn_file
