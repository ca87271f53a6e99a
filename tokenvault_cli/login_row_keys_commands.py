"""`tokenvault login-row-keys refresh`: the public keys file, written again from Transit after a rotation.

`erase` and `reveal --query --verify-rows` verify the rows of user_logins offline with the public keys of the ETL's
row-signing key (tokenvault-login-rows). After the security team rotates that key, the ETL signs new rows with the
new version, which the file does not hold: those rows cannot be verified until the file is refreshed (walk46,
W46-2: they were reported as tampered with). The security team reads the key (public keys only: it is not
exportable) with its own Vault token and the file is replaced at once (a new file renamed over it), so no reader
ever sees half of it.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click
import hvac
from cryptography.hazmat.primitives import serialization

from tokenvault_cli.context import Context, Failure, SettingsFailure
from tokenvault_cli.erase_reach import (
    ListFinding,
    RowCheck,
    RowFinding,
    check_rows_between,
    plural,
)
from tokenvault_cli.key_commands import operator_token
from tokenvault_cli.output import FORMAT_OPTION, Format, write_rows
from tokenvault_cli.query import QueryError
from tokenvault_cli.row_bounds import NothingChecked, max_rows_option, overnamed, too_many_in_range
from tokenvault_cli.rows_by_token import check_rows_holding
from tokenvault_cli.settings import SECURITY_ROLE, Settings, SettingsError
from tokenvault_client import type_of_token
from tokenvault_common.login_row_signatures import LOGIN_ROWS_KEY, PublicKeys, PublicKeysError

COMPOSE_REFRESH = "docker compose up --no-deps vault-init"
"""Compose's refresh of the officers' public keys file: vault-init run again, attached, Vault left as it runs.

walk49, W49-6: this hint said `up -d vault-init`, docs/key-rotation.md `up --no-deps vault-init`. Without
--no-deps, `up` also brings `vault` (vault-init's dependency) in line with the compose file: one edited or
pulled since makes it recreate Vault, which comes back sealed under the running vault service and ETL; and
`-d` hides vault-init's output, so a refresh that failed (Vault away or sealed) looks like one that ran."""


def refresh_command(settings: Settings) -> str:
    """The command that refreshes the settings' public keys file, for the messages that ask for it."""
    if settings.stack_dir is not None:
        return f"`tokenvault --stack {shlex.quote(str(settings.stack_dir))} --as security login-row-keys refresh`"
    target = shlex.quote(str(settings.login_row_keys or "FILE"))
    return (
        f"`tokenvault --login-row-keys {target} login-row-keys refresh` with VAULT_ADDR and the security team's"
        f" VAULT_TOKEN (or `bao read -format=json transit/keys/{LOGIN_ROWS_KEY} > {target}`; compose:"
        f" `{COMPOSE_REFRESH}`)"
    )


def login_rows_command(settings: Settings, days: tuple[date, date] | None) -> str:
    """The security team's `audit login-rows` for those days (first, last), as it runs with the settings given.

    walk47, W47-1: the officer's refusal printed `tokenvault --as security audit login-rows --since DAY`, which
    failed as written on the embedded stack (no --stack: "no database for the query") and left the day to guess.
    """
    span = f"--since {days[0]} --until {days[1]}" if days else "--since DAY"
    if settings.stack_dir is not None:
        return f"`tokenvault --stack {shlex.quote(str(settings.stack_dir))} --as security audit login-rows {span}`"
    target = shlex.quote(str(settings.login_row_keys or "FILE"))
    return (
        f"`tokenvault --login-row-keys {target} audit login-rows {span}` with the security team's read-only"
        " database login (--dsn or TOKENVAULT_ANALYST_DSN)"
    )


def _versions(keys: PublicKeys) -> str:
    return ", ".join(f"v{v}" for v in sorted(keys.by_version)) or "none"


def _named(versions: list[int]) -> str:
    return ", ".join(f"v{v}" for v in versions)


def key_changes(before: PublicKeys, after: PublicKeys) -> tuple[list[int], list[int], list[int]]:
    """The versions `after` adds to `before`, those whose public key it replaces, and those it drops.

    Transit never changes a version's public key, and a version leaves its read only when the key is trimmed
    (min_available_version raised): a replaced or dropped version is the sign of another server - a stale or
    mistyped VAULT_ADDR, another environment - or someone else's key (walk47, W47-14).
    """
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    added = sorted(set(after.by_version) - set(before.by_version))
    dropped = sorted(set(before.by_version) - set(after.by_version))
    replaced = sorted(
        v
        for v in set(before.by_version) & set(after.by_version)
        if before.by_version[v].public_bytes(*raw) != after.by_version[v].public_bytes(*raw)
    )
    return added, replaced, dropped


def _read_key(address: str, token: str) -> dict[str, Any]:
    """Transit's read of LOGIN_ROWS_KEY: its public keys, by version."""
    verify: bool | str = os.environ.get("VAULT_CACERT") or os.environ.get("BAO_CACERT") or True
    client = hvac.Client(url=address, token=token, verify=verify, timeout=30)
    try:
        answer = client.adapter.get(f"/v1/transit/keys/{LOGIN_ROWS_KEY}")
    except hvac.exceptions.Forbidden:
        raise SettingsFailure(
            f"Vault refused to read transit/keys/{LOGIN_ROWS_KEY} with this token (403): the security team's"
            " (policy tokenvault-security) may; nothing was written"
        ) from None
    except hvac.exceptions.VaultError as error:
        raise Failure(f"reading transit/keys/{LOGIN_ROWS_KEY} failed: {error}; nothing was written") from None
    except OSError as error:  # requests' errors are OSErrors
        raise Failure(f"cannot reach Vault at {address} ({type(error).__name__}); nothing was written") from None
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
        raise Failure(f"Vault's answer for transit/keys/{LOGIN_ROWS_KEY} holds no keys; nothing written")
    return data


def _write_atomically(path: Path, text: str) -> None:
    """`text` into `path` by renaming a new file over it (mode 0644: public keys, read by every officer)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    try:
        with os.fdopen(fd, "w") as new:
            new.write(text)
            new.flush()
            os.fchmod(new.fileno(), 0o644)
            os.fsync(new.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@click.group("login-row-keys")
def login_row_keys() -> None:
    """The public keys file of the ETL's row-signing key, with which erase and reveal --verify-rows verify rows."""


@login_row_keys.command()
@click.option(
    "--replace-keys",
    is_flag=True,
    help="Write the file even though Transit's answer gives a version the file holds another public key, or lacks"
    " a version it holds: only for a deliberate change (a new environment, a trimmed key).",
)
@click.pass_obj
def refresh(ctx: Context, replace_keys: bool) -> None:
    """Write the public keys file again from Transit (after each rotation of tokenvault-login-rows).

    Reads transit/keys/tokenvault-login-rows - public keys only: the key is not exportable - with your own Vault
    token ($VAULT_TOKEN, or the file $VAULT_SECURITY_TOKEN_FILE; the embedded stack's by default) at $VAULT_ADDR
    (the stack's by default), and replaces the file (--login-row-keys, TOKENVAULT_LOGIN_ROW_KEYS, a profile's
    login_row_keys, the stack's) in one rename, saying which versions it added. A version of the file that
    Transit's answer lacks or gives another public key - Transit never changes one: the wrong server, or
    someone else's key - refuses, nothing written (exit 2), unless --replace-keys. The security team's command:
    `--as` another role is refused.

    \b
    tokenvault --stack .stack --as security login-row-keys refresh
    """  # noqa: D301 - \b keeps click from rewrapping the example
    settings = ctx.settings
    if settings.role not in (None, SECURITY_ROLE):  # walk47, W47-6: the team's Vault token is used, whatever --as
        raise SettingsFailure(
            f"login-row-keys refresh is the security team's (its Vault token reads the key): --as {settings.role}"
            f" is refused; run it with --as {SECURITY_ROLE}; nothing was written"
        )
    target = settings.login_row_keys
    if target is None:
        raise SettingsFailure(
            "which public keys file to write: pass --login-row-keys FILE before the subcommand"
            " (`tokenvault --login-row-keys FILE login-row-keys refresh`) or set TOKENVAULT_LOGIN_ROW_KEYS"
        )
    address = os.environ.get("VAULT_ADDR") or os.environ.get("BAO_ADDR") or settings.stack_env.get("VAULT_ADDR")
    if not address:
        raise SettingsFailure("where Vault is: set VAULT_ADDR (the embedded stack's with --stack .stack)")
    token = operator_token(ctx, "login-row-keys refresh reads the key's public keys")
    read_at = datetime.now(UTC).isoformat()  # before the read: every version then is in it (A49-3)
    data = _read_key(address, token)
    text = json.dumps({"name": LOGIN_ROWS_KEY, "keys": data["keys"], "read_at": read_at}, indent=1) + "\n"
    try:
        keys = PublicKeys.parse(text)
    except PublicKeysError as error:
        raise Failure(f"Vault's answer is unusable as public keys: {error}; nothing was written") from None
    try:
        held: PublicKeys | None = PublicKeys.parse(target.read_bytes())
    except (OSError, PublicKeysError):
        held = None
    changes = key_changes(held, keys) if held is not None else ([], [], [])
    _, replaced, dropped = changes
    if (replaced or dropped) and not replace_keys:
        raise SettingsFailure(
            _KEYS_CHANGED.format(
                target=target,
                address=address,
                changed="; ".join(
                    x
                    for x in (
                        f"another public key for {_named(replaced)}" if replaced else "",
                        f"no {_named(dropped)}" if dropped else "",
                    )
                    if x
                ),
            )
        )
    try:
        _write_atomically(target, text)
    except OSError as error:
        raise SettingsFailure(f"cannot write {target}: {error.strerror or error}; nothing was written") from None
    said = [f"before: {_versions(held) if held is not None else 'none readable'}"]
    said += [
        f"{what}: {_named(versions)}"
        for what, versions in zip(("added", "replaced", "dropped"), changes, strict=True)
        if versions
    ]
    click.echo(f"{target}: key versions {_versions(keys)} of {LOGIN_ROWS_KEY} ({'; '.join(said)})")


_KEYS_CHANGED = (
    "{target} was not written: the key Vault at {address} gives is not the one the file holds ({changed}). Transit"
    " never changes a version's public key and drops a version only when the key is trimmed, so this is another"
    " server (a stale or mistyped VAULT_ADDR, another environment) or someone else's key - with it, the rows the ETL"
    " signed would no longer verify, and rows signed by that key's holder would (walk47, W47-14). Check VAULT_ADDR;"
    " for a deliberate change (a new environment, a trimmed key) run it again with --replace-keys"
)
"""The refusal of a refresh that would replace or drop a version's public key."""


@click.command("login-rows")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d"]),
    metavar="YYYY-MM-DD",
    help="The first create_date of the rows to check (or --token).",
)
@click.option(
    "--until",
    type=click.DateTime(["%Y-%m-%d"]),
    metavar="YYYY-MM-DD",
    help="The last create_date of the rows to check [default: none, every day from --since on].",
)
@click.option(
    "--token",
    "tokens",
    multiple=True,
    metavar="TOKEN",
    help="Check the rows holding this token instead of a range of days, whatever their create_date (repeatable).",
)
@max_rows_option("rows of user_logins (those of the range, or holding the tokens)")
@FORMAT_OPTION
@click.pass_obj
def audit_login_rows(
    ctx: Context,
    since: datetime | None,
    until: datetime | None,
    tokens: tuple[str, ...],
    max_rows_checked: int,
    fmt: str,
) -> None:
    """Which rows of user_logins do not verify against the ETL's signature: event ids and signed lists.

    For the security team once `erase` or `reveal --verify-rows` reported rows that do not verify (erase names
    their event ids): the rows created from --since to --until, and every row with no create_date (which no
    range finds), are checked as those commands check theirs (offline, with the public keys file,
    --login-row-keys; as the analysts' read-only database role, --dsn; the stack's by default), at most
    --max-rows-checked (10,000 by default) at once: past it nothing is checked (exit 2). Not the vault's report:
    this command reads the database itself and no audit row records
    it; any login that reads user_logins can run it (in production the security team needs a read-only login
    of its own and the keys file). --until before --since is refused (exit 2). Prints each row that does not
    verify or carries no signature - its event id, its signed list (row_manifest), what is wrong, when its list
    was signed (UTC) - never a user id, token or value; the rows signed by a key version the file lacks (a
    rotation since it was written: refresh it) one line per signed list, counted, no event id; an
    unsigned row a signed list lists as it is had its signature cleared (the database owner's doing). The
    signed lists those rows name, and those signed in those days (UTC), are counted whole: each list some of
    whose rows are missing (deleted, or changed since), changed or copied is printed too - no event id, its
    list, how many of its listed rows are missing, changed or copied. On a terminal too narrow for the table
    (80 columns) each row is a block of its fields. Then the counts, and what erase and reveal --verify-rows
    would refuse in the table itself (a view in its place, a nondeterministic collation on a column). Exit 1
    when a row does not verify, is changed in its list, is a copy or has its signature cleared, or the table
    is so, else 0: rows missing are reported, not an alarm by themselves (the data team may delete old rows
    for retention: compare the lists' signing times with its deletions).

    With --token (instead of --since/--until) the rows holding those tokens are checked the same way, whatever
    their create_date: what an erasure refused past its bound (--max-rows-checked) names; past that bound too,
    the rows are counted by the signed list they name instead (no user id, token or value), with the rows of
    user_logins naming each list and the rows it lists (more naming it: rows no ETL load made, attack 49),
    nothing verified (exit 2, attack 48).

    Exit codes: 0 every row checked verifies, 1 some row does not verify (or is changed, copied, cleared),
    2 nothing checked (past --max-rows-checked, a usage or settings error).

    \b
    tokenvault --stack .stack --as security audit login-rows --since 2026-12-01
    tokenvault --stack .stack --as security audit login-rows --token ip_...
    """  # noqa: D301 - \b keeps click from rewrapping the example
    if tokens:
        if since is not None or until is not None:
            raise click.UsageError("give --token or --since/--until, not both")
        _login_rows_holding(ctx, tokens, fmt, max_rows_checked)
        return
    if since is None:
        raise click.UsageError("give --since (the first create_date to check) or --token")
    first = since.date()
    last = until.date() if until else date.max
    if last < first:  # walk47, W47-24: swapped dates read as a clean day ("0 rows", exit 0)
        raise click.BadParameter(f"{last} is before --since {first}: nothing checked", param_hint="--until")
    with _nothing_checked_on_failure():
        check, findings = check_rows_between(ctx.settings.dsn(), first, last, ctx.settings.row_keys, max_rows_checked)
    if check.too_many:  # walk47, W47-19: exit 2, not 1 ("a row does not verify")
        raise NothingChecked(too_many_in_range(check))
    _report(
        ctx,
        check,
        findings,
        fmt,
        f"rows created from {first} to {until.date() if until else 'now'} or with no create_date",
    )


@contextmanager
def _nothing_checked_on_failure() -> Iterator[None]:
    """Settings and query failures of `audit login-rows` as the CLI's failures, saying nothing was checked."""
    try:
        yield
    except SettingsError as error:
        raise SettingsFailure(
            f"{error} - `audit login-rows` verifies the rows of user_logins; nothing checked"
        ) from None
    except QueryError as error:
        raise Failure(f"{error}; nothing checked") from None


def _login_rows_holding(ctx: Context, tokens: tuple[str, ...], fmt: str, max_rows: int) -> None:
    """`audit login-rows --token`: the rows holding the tokens checked, or past the bound counted by list (A48-2)."""
    if not all(type_of_token(t) for t in tokens):  # never repeated: it may be a value
        raise click.UsageError("--token takes a token (a type prefix such as ip_ or dev_ and 22 characters)")
    with _nothing_checked_on_failure():
        check, findings, by_list = check_rows_holding(ctx.settings.dsn(), tokens, ctx.settings.row_keys, max_rows)
    if check.too_many:
        counted = [tuple("" if x is None else x for x in row) for row in by_list]
        write_rows(["row_manifest", "rows", "no_create_date", "rows_naming_the_list", "listed"], counted, Format(fmt))
        found = "rows naming too many signed lists" if check.lists_too_large else f"{check.rows:,} rows"
        beyond = (
            f"; the lists are named by more rows of user_logins than they list ({overnamed(check)}), holding these"
            " tokens or not (rows_naming_the_list above, against listed)"
            if check.lists_overnamed
            else ""
        )
        raise NothingChecked(
            f"{found} of user_logins hold these tokens, more than are checked at once (--max-rows-checked"
            f" {check.bound:,}): counted above by the signed list they name (empty: none), the most first, with the"
            f" rows naming each list and the rows it lists{beyond}; rows no ETL load made (no list, a list that does"
            " not verify, a list named beyond what it lists) may be planted to block erasures - the database owner"
            " can delete them; if they are genuine, --max-rows-checked N verifies up to N; nothing verified"
        )
    _report(ctx, check, findings, fmt, "rows holding the tokens")


def _report(ctx: Context, check: RowCheck, findings: list[RowFinding | ListFinding], fmt: str, which: str) -> None:
    """The findings, the counts of `which` rows, the notes; exit 1 on a row not verifying, changed, copied, cleared."""
    rows = _finding_rows(findings)
    output = Format(fmt)
    if rows:  # whole ids on an 80-column terminal: a block per row when the table does not fit (walk47, W47-4)
        write_rows(
            LOGIN_ROWS_COLUMNS if output is Format.TABLE else LOGIN_ROWS_FIELDS, rows, output, records_when_narrow=True
        )
    verified = check.rows - check.failing - check.unsigned - check.unknown_key
    click.echo(
        f"{which}: {check.rows};"
        f" verify: {verified};"
        f" do not verify: {check.failing}; unsigned: {check.unsigned}; signed by a key version the keys file"
        f" lacks: {check.unknown_key}; signed lists with rows missing: {check.lists_missing} ({check.missing}"
        f" rows); rows changed in their list: {check.changed}; copies of signed rows: {check.copied};"
        f" signatures cleared: {check.cleared}",
        err=True,
    )
    if check.missing:
        click.echo(MISSING_ROWS_NOTE, err=True)
    if check.unknown_key:
        click.echo(f"refresh the keys file, then check again: {refresh_command(ctx.settings)}", err=True)
    if check.cleared:
        click.echo(CLEARED_NOTE, err=True)
    for problem in check.table_problems:  # erase and reveal --verify-rows refuse these (attack 47)
        click.echo(f"{problem}: erase and reveal --verify-rows refuse to go on (the database owner's change)", err=True)
    if check.failing or check.copied or check.changed or check.cleared or check.table_problems:
        raise SystemExit(1)


def _finding_rows(findings: list[RowFinding | ListFinding]) -> list[tuple[str, str, str, str]]:
    """The findings as the output's rows; the rows signed by a key version the keys file lacks, one per signed list.

    walk48, W48-12: after a rotation of the row-signing key every row loaded since is such a row, each printed with
    the same words, list and time - thousands of blocks for one cause, the refresh said once under the counts. Now
    one row per list and version: no event id, the list, `N rows signed with key version vK, not in the keys file`.
    """
    lacking = Counter(
        (f.manifest_id, f.version_lacking)
        for f in findings
        if isinstance(f, RowFinding) and f.version_lacking is not None
    )
    rows: list[tuple[str, str, str, str]] = []
    for f in findings:
        if isinstance(f, ListFinding):
            rows.append(("", str(f.manifest_id), f.finding(), _when(f.signed_at)))
        elif f.version_lacking is None:
            rows.append((f.event_id, str(f.manifest_id or ""), f.finding, _when(f.signed_at)))
        elif (group := (f.manifest_id, f.version_lacking)) in lacking:  # its list's first row: the list's line
            said = f"{plural(lacking.pop(group), 'row')} signed with key version v{f.version_lacking}"
            said += ", not in the keys file"
            rows.append(("", str(f.manifest_id or ""), said, _when(f.signed_at)))
    return rows


LOGIN_ROWS_COLUMNS = ("event_id", "row_manifest", "finding", "list signed (UTC)")
"""audit login-rows' table columns, for people."""
LOGIN_ROWS_FIELDS = ("event_id", "row_manifest", "finding", "list_signed_at")
"""The same columns as CSV headers and JSON keys, for programs."""


def _when(signed_at: datetime | None) -> str:
    """When a list was signed, UTC to the second ("" when its list was not read)."""
    return signed_at.strftime("%Y-%m-%d %H:%M:%S") if signed_at else ""


CLEARED_NOTE = (
    "rows whose signature was cleared are in user_logins as the ETL signed them, but no longer name their list"
    " (row_manifest emptied): no load and no retention does that - the database owner did (walk47, W47-7); erase"
    " counts them as unsigned rows the officer must confirm"
)
"""Said under the counts when a row a signed list lists as it is names no list (an alarm: exit 1)."""


MISSING_ROWS_NOTE = (
    "rows missing from a signed list were deleted or changed since the ETL loaded them: the data team's retention"
    " deletes old rows (not an alarm by itself - compare the lists' signing times, `list signed (UTC)`, with its"
    " deletions); any other"
    " deletion is the database owner's (a row changed since is counted as changed too). Meanwhile `erase` of"
    " tokens held by another row of such a list is refused unless the officer confirms the count"
    " (--accepting-missing-rows N)"
)
"""Said under the counts when a signed list misses rows (A41-1's Left: reported, not an alarm: retention)."""


COMMANDS = (login_row_keys,)
