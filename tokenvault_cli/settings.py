"""Where the command finds the vault and who it is: flags, environment, a profile, or the embedded stack.

Each setting is taken from the first of: its flag, its `TOKENVAULT_*` environment variable
(click reads both), the selected profile, the embedded stack (`--stack DIR --as ROLE`).
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

from devstack.envfile import parse_env
from tokenvault_client import ClientIdentity
from tokenvault_common.database_dsn import password_exposed
from tokenvault_common.login_row_signatures import PublicKeys, PublicKeysError
from tokenvault_common.trusted_files import UntrustedFile, read_private_key, read_trusted

SECURITY_ROLE = "security"
"""The security team: its client certificate (CN security-team) for the key jobs the vault runs (reencrypt,
reindex) and the audit reports it makes (audit verify, who-saw); the other key commands run with the vault
service's own settings and the team's Vault token."""
SECURITY_TEAM_CERTIFICATE = "security-team"
"""The CN of the security team's client certificate on the embedded stack."""

CLIENT_ROLES = ("analyst", "fraud-investigator", "privacy-officer", "etl-service")
"""Client certificates the embedded stack issues (their CN is the identity in the vault's policy)."""

ROLES = (*CLIENT_ROLES, SECURITY_ROLE)
ROLES_SAID = f"roles: {', '.join(CLIENT_ROLES)}; {SECURITY_ROLE} for the key and audit commands"
"""Every role `--as` takes, said in the messages that ask for one (they left out `security`: walk, 6 Dec)."""

DEFAULT_PROFILE_FILE = Path("~/.config/tokenvault/profiles.toml")
REDIRECTED = (
    "another local account able to change it could point tokenvault at a server of its own, which would answer"
    " your reveals and be told your erasures; nothing was done"
)
"""Why a settings file (or the CA certificate) another account may change is refused (trusted_files)."""
PASSWORD_KEYS = {"password": "a password", "sslpassword": "a client key's passphrase (sslpassword)"}
"""The DSN settings that are secrets, as refusals name them."""


class SettingsError(Exception):
    """A setting is missing or unusable; the message says how to provide it."""


@dataclass(frozen=True)
class Settings:
    """Everything a subcommand may need; None where nothing provided it."""

    address: str | None = None
    """The vault's gRPC address, host:port (--address, TOKENVAULT_ADDRESS)."""
    ca: Path | None = None
    """CA certificate that signed the vault's server certificate (--ca, TOKENVAULT_CA)."""
    cert: Path | None = None
    """Our client certificate (--cert, TOKENVAULT_CERT)."""
    key: Path | None = None
    """Its private key (--key, TOKENVAULT_KEY)."""
    server_name: str | None = None
    """Name to check the server certificate against (--server-name, TOKENVAULT_SERVER_NAME)."""
    analyst_dsn: str | None = None
    """Read-only database role for `reveal --query` (--dsn, TOKENVAULT_ANALYST_DSN)."""
    deadline: float | None = None
    """Seconds per vault call (--deadline, TOKENVAULT_DEADLINE; default 30)."""
    login_row_keys: Path | None = None
    """Public keys of the ETL's row-signing key (--login-row-keys, TOKENVAULT_LOGIN_ROW_KEYS; the stack's)."""
    role: str | None = None
    """Who we act as on the embedded stack (--as, TOKENVAULT_AS)."""
    stack_dir: Path | None = None
    """The embedded stack's state directory (--stack, TOKENVAULT_STACK)."""
    stack_env: Mapping[str, str] = field(default_factory=dict)
    """The stack's stack.env, when --stack is given."""
    shared_login_warning: str | None = None
    """Said by `erase` when it counts with the analysts' shared login of an older stack (R38-8), else None."""

    def identity(self) -> ClientIdentity:
        """The mTLS files; SettingsError naming each missing one and where to set it."""
        missing = [
            f"{name} ({flag} or {env})"
            for name, flag, env, value in (
                ("the vault's address", "--address", "TOKENVAULT_ADDRESS", self.address),
                ("the CA certificate", "--ca", "TOKENVAULT_CA", self.ca),
                ("a client certificate", "--cert", "TOKENVAULT_CERT", self.cert),
                ("its key", "--key", "TOKENVAULT_KEY", self.key),
            )
            if not value
        ]
        if missing and self.stack_dir is not None and self.role is None:
            raise SettingsError(f"with --stack, say who you act as: --as ROLE ({ROLES_SAID})")
        if missing and self.role == SECURITY_ROLE:
            raise SettingsError(
                "missing " + ", ".join(missing) + ": the key jobs and audit reports need the security team's client"
                " certificate (CN security-team, in the vault policy with key_jobs and audit_reports)"
            )
        if missing:
            raise SettingsError(
                "missing " + ", ".join(missing) + "; or act as a client of the embedded stack with"
                f" `--stack .stack --as analyst` ({ROLES_SAID}), or select a profile"
            )
        assert self.ca and self.cert and self.key
        for what, path in (("CA certificate", self.ca), ("client certificate", self.cert), ("client key", self.key)):
            if not path.is_file():
                raise SettingsError(f"the {what} {path} does not exist or is not a file")
        swapped = "another local account able to change it could make tokenvault act as someone else; nothing was done"
        pems = []
        for what, path, why in (("CA certificate", self.ca, REDIRECTED), ("client certificate", self.cert, swapped)):
            try:
                pems.append(read_trusted(path).data)
            except UntrustedFile as error:
                raise SettingsError(f"the {what} {path} is refused: {error}; {why}") from None
            except OSError as error:
                raise SettingsError(f"cannot read the {what} {path}: {error.strerror or error}") from None
        try:
            key = read_private_key(self.key).data
        except UntrustedFile as error:
            raise SettingsError(f"the client key {self.key} is refused: {error}; nothing was done") from None
        except OSError as error:
            raise SettingsError(f"cannot read the client key {self.key}: {error.strerror or error}") from None
        # gRPC is given the bytes read from the files checked, not their paths to open again (a swap in between)
        return ClientIdentity(
            self.ca, self.cert, self.key, self.server_name, ca_pem=pems[0], cert_pem=pems[1], key_pem=key
        )

    def row_keys(self) -> PublicKeys:
        """The ETL's row-signing public keys, from a file no other account may change; SettingsError otherwise."""
        how = (
            "pass --login-row-keys FILE before the subcommand (`tokenvault --login-row-keys FILE erase|reveal …`)"
            " or set TOKENVAULT_LOGIN_ROW_KEYS (`bao read -format=json transit/keys/tokenvault-login-rows > FILE`)"
        )
        if self.login_row_keys is None and self.stack_dir is not None:
            raise SettingsError(
                f"no public keys of the ETL's row-signing key to verify the rows of user_logins with: the stack's"
                f" {self.stack_dir / 'stack.env'} names none (no LOGIN_ROW_KEYS_FILE: a stack started before row"
                f" signing; `make down`, then `make up`, starts one that has them), or {how}"
            )
        if self.login_row_keys is None:
            raise SettingsError(
                f"no public keys of the ETL's row-signing key to verify the rows of user_logins with: {how}, or use"
                " --stack .stack"
            )
        if not self.login_row_keys.exists() and not self.login_row_keys.is_symlink():
            raise SettingsError(
                f"the public keys file {self.login_row_keys} does not exist: {how}"
                + (", or use --stack .stack" if self.stack_dir is None else "")
            )
        try:
            contents = read_trusted(self.login_row_keys)
        except UntrustedFile as error:
            raise SettingsError(
                f"the public keys file {self.login_row_keys} is refused: {error}; another local account able to"
                " change it could make rows it rewrote verify"
            ) from None
        except OSError as error:
            raise SettingsError(f"cannot read the public keys file {self.login_row_keys}: {error.strerror}") from None
        try:
            keys = PublicKeys.parse(contents.data)
        except PublicKeysError as error:
            raise SettingsError(f"the public keys file {self.login_row_keys} is unusable: {error}") from None
        return keys  # its read_at, when it says (A49-3); never its modification time - a copy's is its own (R49-5)

    def dsn(self) -> str:
        """The read-only database connection string for queries; refused when it could give its password away.

        An analyst's DSN holds a person's password: one that could hand it to whatever answers on the
        database's address is refused before any connection, as the services' are
        (tokenvault_common/database_dsn.py).
        """
        if not self.analyst_dsn:
            raise SettingsError(
                "no database for the query: pass --dsn or set TOKENVAULT_ANALYST_DSN (the analysts' read-only role),"
                " or use --stack .stack"
            )
        variable = "the query's DSN (--dsn, TOKENVAULT_ANALYST_DSN, a profile's analyst_dsn or the stack's)"
        if problem := password_exposed(variable, self.analyst_dsn, os.environ):
            raise SettingsError(f"{problem}; nothing was queried")
        return self.analyst_dsn


_SPELLED_PASSWORD = re.compile(r"(?i)\b(ssl)?password\s*=\s*[^\s&]|^[a-z][a-z0-9+.-]*://[^/@]*:[^/@]+@")
"""A password in a DSN libpq cannot read (a bad port, say): a `password=` setting, or `user:password@` in a URL."""


def secrets_in(dsn: str) -> list[str]:
    """The secrets a DSN carries (PASSWORD_KEYS' descriptions); [] for none.

    A DSN libpq cannot read is refused where it is used (Settings.dsn), without being quoted; what looks like a
    password in it counts here.
    """
    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        return [PASSWORD_KEYS["password"]] if _SPELLED_PASSWORD.search(dsn.strip()) else []
    return [said for key, said in PASSWORD_KEYS.items() if params.get(key)]


def refuse_command_line_dsn(dsn: str) -> None:
    """SettingsError when a DSN given on the command line (--dsn) carries a password; the message never quotes it.

    Every local account reads a command line (ps, /proc/PID/cmdline) and the shell keeps it in its history, as
    `tokenize` says of values given there (attack 37).
    """
    secrets = secrets_in(dsn)
    if secrets:
        raise SettingsError(
            f"--dsn holds {' and '.join(secrets)}: refused, every local account can read the command line (ps,"
            " /proc/PID/cmdline) and your shell keeps it in its history; nothing was done. Leave the password out"
            " of the DSN and put it in ~/.pgpass (or the file PGPASSFILE names; mode 0600), or give the whole DSN"
            " in TOKENVAULT_ANALYST_DSN or as analyst_dsn in your profile (a file only you may read); and consider"
            " that password seen: have it changed"
        )


def load_profile(path: Path | None, name: str | None) -> dict[str, str]:
    """The `[name]` table of a TOML profile file (`[default]` when no name); {} when there is none.

    The file is refused when another local account could change it (trusted_files), and when it holds a
    password in an `analyst_dsn` and may be read by anyone but its owner (as libpq ignores such a ~/.pgpass).
    """
    explicit = path is not None or name is not None
    path = (path or DEFAULT_PROFILE_FILE).expanduser()
    if not path.is_file():
        if path != DEFAULT_PROFILE_FILE.expanduser() or name:
            raise SettingsError(f"profile file {path} does not exist")
        return {}
    try:
        contents = read_trusted(path)  # what is parsed is the file checked, read once (not opened again by path)
    except UntrustedFile as error:
        raise SettingsError(f"profile file {path} is refused: {error}; {REDIRECTED}") from None
    except OSError as error:
        raise SettingsError(f"cannot read profile file {path}: {error.strerror or error}") from None
    try:
        profiles = tomllib.loads(contents.data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise SettingsError(f"cannot read profile file {path}: {error}") from None
    with_password = [
        table_name
        for table_name, table in profiles.items()
        if isinstance(table, dict) and secrets_in(str(table.get("analyst_dsn", "")))
    ]
    mode = stat.S_IMODE(contents.mode)
    if with_password and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(
            f"profile file {path} is refused: its [{with_password[0]}] analyst_dsn holds a password, and others"
            f" may read the file (mode {mode:04o}): `chmod 600 {shlex.quote(str(path))}`; nothing was done"
        )
    table = profiles.get(name or "default")
    if table is None:
        if explicit and name:
            raise SettingsError(f"no profile [{name}] in {path} (it has: {', '.join(profiles) or 'none'})")
        return {}
    if not isinstance(table, dict):
        raise SettingsError(f"[{name}] in {path} is not a table")
    known = {f.name for f in fields(Settings)} - {"stack_env", "shared_login_warning"} | {"as", "stack"}
    unknown = set(table) - known
    if unknown:
        raise SettingsError(f"unknown setting(s) in [{name or 'default'}] of {path}: {', '.join(sorted(unknown))}")
    base = path.parent
    resolved = {k: str(v) for k, v in table.items()}
    for key in PATH_SETTINGS:
        if key in resolved:
            resolved[key] = str((base / Path(resolved[key]).expanduser()).resolve())
    return resolved


OLDER_STACK_OFFICER = (
    "warning: {env_file} is of a stack started before the privacy officer had a database login of its own:"
    " erase counts other people's rows with the analysts' shared login, whose settings and password any analyst"
    " may change (attack 38, M1/M2; the count pins what it can). A stack started afresh has one (`make down`"
    " deletes the stack's data, then `make up`), or give --dsn a login of the officer's own."
)
"""Said (stderr) by `erase` when `--as privacy-officer` counts with the analysts' login of an older stack (R38-8)."""


PATH_SETTINGS = frozenset({f.name for f in fields(Settings) if f.type == "Path | None"} | {"stack"})
"""Settings naming files, which a profile gives relative to itself (every Path field: none forgotten, walk 46 W46-1)."""


def read_stack_env(stack_dir: Path) -> dict[str, str]:
    """The embedded stack's stack.env in `stack_dir`, read once from the file checked (trusted_files)."""
    env_file = stack_dir / "stack.env"
    if not env_file.is_file():
        raise SettingsError(f"no {env_file}: is the embedded stack up? Start it with `make up` (or `make run`)")
    try:
        data = read_trusted(env_file).data
    except UntrustedFile as error:
        raise SettingsError(f"the stack's {env_file} is refused: {error}; {REDIRECTED}") from None
    except OSError as error:
        raise SettingsError(f"cannot read {env_file}: {error.strerror or error}") from None
    try:
        return parse_env(data.decode())
    except (UnicodeDecodeError, ValueError) as error:
        raise SettingsError(f"cannot read {env_file}: {error}") from None


def from_stack(stack_dir: Path, env: Mapping[str, str], role: str | None) -> dict[str, str]:
    """Settings of the embedded stack in `stack_dir` (its stack.env `env`, read_stack_env) for `role`."""
    values = {
        "address": env.get("TOKENVAULT_GRPC_ADDRESS", ""),
        "ca": env.get("TLS_CA_CERT", ""),
        "server_name": "localhost",
        "analyst_dsn": env.get("PG_ANALYST_DSN", ""),
        "login_row_keys": env.get("LOGIN_ROW_KEYS_FILE", ""),
    }
    if role == "privacy-officer" and env.get("PG_PRIVACY_OFFICER_DSN"):
        # erase's count on the officer's own login: no analyst can set its defaults or password (attack 38, M1/M2).
        values["analyst_dsn"] = env["PG_PRIVACY_OFFICER_DSN"]
    if role in ROLES:
        name = SECURITY_TEAM_CERTIFICATE if role == SECURITY_ROLE else role
        prefix = name.upper().replace("-", "_").replace("ETL_SERVICE", "ETL")
        certs = Path(env.get("STACK_DIR", str(stack_dir))) / "certs"
        values["cert"] = env.get(f"{prefix}_TLS_CERT") or str(certs / f"{name}.pem")
        values["key"] = env.get(f"{prefix}_TLS_KEY") or str(certs / f"{name}-key.pem")
    return {k: v for k, v in values.items() if v}


MAX_DEADLINE_SECONDS = 86400.0
"""The most --deadline may be: a day. gRPC ends a call whose timeout it cannot represent (inf, 1e300) at once."""


def seconds_per_call(deadline: str | None) -> float | None:
    """--deadline, TOKENVAULT_DEADLINE or a profile's `deadline` as seconds; None when not given.

    0, a negative number, nan, inf and past a day are refused: 0 was taken as the default 30 s, and the
    others ended every call at once with DEADLINE_EXCEEDED, whose advice - raise --deadline - did not help
    (walk 53, W53-1).
    """
    if not deadline:
        return None
    try:
        seconds = float(deadline)
    except ValueError:
        raise SettingsError(f"deadline must be a number of seconds, got {deadline!r}") from None
    if not 0 < seconds <= MAX_DEADLINE_SECONDS:  # false for nan too
        raise SettingsError(
            f"deadline must be a number of seconds above 0 and at most {MAX_DEADLINE_SECONDS:.0f} (a day), got"
            f" {deadline!r}: give --deadline (TOKENVAULT_DEADLINE, a profile's deadline) such as 30, or leave it"
            " out for the default 30 s"
        )
    return seconds


def resolve(flags: Mapping[str, object], profile: Mapping[str, str]) -> Settings:
    """Flags (and their environment variables) first, then the profile, then the stack."""

    def pick(name: str, *aliases: str) -> str | None:
        value = flags.get(name)
        if value not in (None, ""):
            return str(value)
        for key in (name, *aliases):
            if profile.get(key):
                return profile[key]
        return None

    role = pick("role", "as")
    if role is not None and role not in ROLES:
        raise SettingsError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    stack = pick("stack_dir", "stack")
    stack_dir = Path(stack).expanduser().resolve() if stack else None
    stack_env = read_stack_env(stack_dir) if stack_dir else {}
    stack_values = from_stack(stack_dir, stack_env, role) if stack_dir else {}

    def setting(name: str) -> str | None:
        return pick(name) or stack_values.get(name)

    older_stack = stack_env.get("PG_ANALYST_DSN") and not stack_env.get("PG_PRIVACY_OFFICER_DSN")
    shared_login = role == "privacy-officer" and older_stack and not pick("analyst_dsn")
    warning = OLDER_STACK_OFFICER.format(env_file=Path(str(stack)) / "stack.env") if shared_login else None

    deadline_seconds = seconds_per_call(setting("deadline"))

    def path(name: str) -> Path | None:
        value = setting(name)
        return Path(value).expanduser() if value else None

    return Settings(
        address=setting("address"),
        ca=path("ca"),
        cert=path("cert"),
        key=path("key"),
        server_name=setting("server_name"),
        analyst_dsn=setting("analyst_dsn"),
        deadline=deadline_seconds,
        login_row_keys=path("login_row_keys"),
        role=role,
        stack_dir=stack_dir,
        stack_env=stack_env,
        shared_login_warning=warning,
    )
