"""Whom an erasure reaches besides the person: other people's rows of user_logins holding the tokens to erase.

Tokens are per value (one token per (type, value), so analysts find duplicates by comparing
tokens), and erasing a token destroys the value for every row holding it, whoever's it is: a
shared office or carrier-grade-NAT address, a family tablet, a placeholder device id an SDK
sends for everyone (attack 34, E3). The vault does not know whose a token is; user_logins does,
and the analysts' read-only role - the database `reveal --query` uses - reads it. `tokenvault
erase` counts with it before erasing and refuses, unless the officer confirms the count, when
other people's rows hold a token. A decision aid taken before the erasure, not a lock: rows
loaded in between are not in the count, so the command counts again after the erasure.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from tokenvault_cli.query import QueryError, database_failure
from tokenvault_cli.row_indexes import INDEXES_NOT_BUILT_IN, index_problems
from tokenvault_cli.row_owners import (
    COLUMNS_NOT_EXACT,
    RELATIONS_NOT_PLAIN,
    TokenReach,
    column_problems,
    reach_of_rows,
    relation_problems,
)
from tokenvault_common.login_row_signatures import (
    MAX_LIST_BYTES_EACH,
    PublicKeys,
    digests_of,
    row_digest,
    signed_input,
)
from tokenvault_common.pg_options import startup_options

REACH_SQL = """
WITH wanted AS (
    SELECT DISTINCT w.token FROM pg_catalog.unnest(%(tokens)s::pg_catalog.text[]) AS w(token)
), holders AS (
    SELECT w.token, l.user_id::pg_catalog.text COLLATE pg_catalog."C" AS user_id, l.ctid AS row_id,
           coalesce(
               l.user_id::pg_catalog.text COLLATE pg_catalog."C"
                   OPERATOR(pg_catalog.=) ANY (%(person)s::pg_catalog.text[]),
               false
           ) AS theirs
    FROM wanted AS w
    JOIN public.user_logins AS l
      ON (w.token OPERATOR(pg_catalog.=) l.masked_ip::pg_catalog.text
          AND w.token OPERATOR(pg_catalog.=) l.masked_ip::pg_catalog.text COLLATE pg_catalog."C")
      OR (w.token OPERATOR(pg_catalog.=) l.masked_device_id::pg_catalog.text
          AND w.token OPERATOR(pg_catalog.=) l.masked_device_id::pg_catalog.text COLLATE pg_catalog."C")
), per_token AS (
    SELECT token,
           count(*) FILTER (WHERE theirs) AS their_rows,
           count(*) FILTER (WHERE NOT theirs) AS other_rows,
           count(DISTINCT user_id) FILTER (WHERE NOT theirs)
               + coalesce(max(1) FILTER (WHERE NOT theirs AND user_id IS NULL), 0) AS other_people
    FROM holders GROUP BY token
), everyone AS (
    SELECT count(DISTINCT user_id) + coalesce(max(1) FILTER (WHERE user_id IS NULL), 0) AS people FROM holders
), reaching AS (
    SELECT token FROM per_token
    WHERE CASE WHEN %(named)s THEN other_rows > 0 ELSE (SELECT people FROM everyone) > 1 END
)
SELECT token, their_rows, other_rows, other_people FROM per_token
UNION ALL
SELECT NULL, 0, count(DISTINCT row_id),
       count(DISTINCT user_id) + coalesce(max(1) FILTER (WHERE user_id IS NULL), 0)
FROM holders WHERE NOT theirs AND token IN (SELECT token FROM reaching)
"""
"""Per token held by some row: the person's rows, other rows, other people; then one row of totals over the
tokens that reach other people (token NULL): distinct rows (a row holding two of them counts once) and people.
Rows without a user id count as one more person. Without a person named, every token some row holds reaches
others once the rows holding them are several people's (review 37, R37-8: two tokens, each one other person's
alone, were erased without a word)."""


COUNT_SETTINGS: dict[str, str] = {
    "statement_timeout": "30s",
    "lock_timeout": "10s",
    "default_transaction_read_only": "on",
    "default_transaction_isolation": "read committed",
    "default_transaction_deferrable": "off",
    "idle_session_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
    "search_path": "pg_catalog, pg_temp",
    "role": "none",
    "client_encoding": "UTF8",
    "local_preload_libraries": "",
    "DateStyle": "ISO, YMD",
    "bytea_output": "hex",
    "row_security": "off",
}
"""What the count's session starts with, whatever defaults its login has (attack 35, N8).

Any login may set defaults for its own future sessions (`ALTER ROLE CURRENT_USER SET`), and the
analysts often share one: an analyst's `statement_timeout = 1` cancelled every officer's count, so
every erasure was refused. Settings given at connection start (libpq's `options`) take precedence
over role and database defaults (as the vault's, vault_service/adapters/postgres/session_settings.py):
a bound of its own on the statement and on lock waits (a count is an index lookup: milliseconds),
read-only, read committed and not deferrable (attack 36, D1: a default `serializable` + `deferrable`
made the read-only count wait for a safe snapshot behind an analyst's open serializable transaction
until its own timeout, and every erasure was refused), no idle timeouts (review 37, R37-1: the session is
idle between its connection and BEGIN, then between BEGIN and the count, for a network round trip each - with
`idle_session_timeout = 1` or `idle_in_transaction_session_timeout = 1` set on the login, a database 2 ms away ended
every count's session, and every erasure was refused), the search path (REACH_SQL names its table
by schema and its functions and operators in pg_catalog), and the login's own role (a default `role`
makes sessions act as a group of the login), the client encoding (attack 38, M1: with a default `SQL_ASCII`
psycopg returns text as bytes, no token asked for was found held, and an erasure of a value other people's rows hold
went through without the refusal, silently - `count_reach` also refuses a token it cannot match) and no library
loaded at the session's start (M2: a default `local_preload_libraries` naming a library that is not there ended
every count's session at its start, so every erasure was refused).

The rows' check (ROWS_SQL, attack 41, A41-1) reads a date and bytea: `DateStyle` and `bytea_output` are pinned
for them. `row_security` is off (attack 46's note): the database owner's row-level security policy on user_logins
or user_login_manifests, filtering what the count's login sees, would hide other people's rows from the count and
the person's from the check; with it off any such policy makes the count fail, and the erasure is refused.
Checked and not pinned (PostgreSQL 15; the count reads one text and three bigint columns, and binds its
parameters on the server): `IntervalStyle`, `TimeZone`, `extra_float_digits`,
`lc_numeric` (no time, interval or float is read; a bigint's text does not depend on them),
`standard_conforming_strings` and `backslash_quote` (REACH_SQL has no string literal), `array_nulls` (tokens are
never the word NULL), `transform_null_equals` (no `= NULL`),
`gin_fuzzy_search_limit` (its indexes are btree), `restrict_nonsystem_relation_kind` (user_logins is a table,
and the setting is unknown to a startup packet before 15.8), the planner's `enable_*`, costs, `jit*` and `work_mem`
(a slower plan, still bounded by statement_timeout: attack 38, O4), `exit_on_error`, `temp_tablespaces` (a
missing one is skipped), `client_min_messages` and the `debug_print_*`/`trace_*` settings (messages, not
results). Not settable by the login for itself: `session_preload_libraries` (superuser), `post_auth_delay` and
other connection-start settings ("cannot be set after connection start"), `transaction_isolation` and
`transaction_read_only`; `session_authorization` is ignored at connection. PostgreSQL 17's `transaction_timeout` is
pinned to 0 on a server that has it (TRANSACTION_TIMEOUT_SETTING, `count_reach`): unknown to an older server's
startup packet (which refuses the connection), it is not in these. What no setting fixes: the login's password,
which any login may change for itself - then the count cannot log in and every erasure is refused; the embedded
stack's privacy officer therefore counts with a login of its own (README, docs/threat-model.md)."""


POLICY_HIDES_ROWS = (
    "a row-level security policy - the database owner's - would choose which rows this check reads (it reads every"
    " row, or refuses): report it to the security team, who has the owner remove it"
)
"""Said when row_security = off met a policy on a table the count reads (the database owner's, attack 46's note)."""

TRANSACTION_TIMEOUT_SETTING = ("transaction_timeout", "0", 170000)
"""PostgreSQL 17's `transaction_timeout` (name, pinned value, the first server_version_num that has it).

Any login may set it for its own sessions as it may statement_timeout (attack 35, N8): an analyst's
`ALTER ROLE CURRENT_USER SET transaction_timeout = 1` ended every officer's count on the shared login - a FATAL
"terminating connection due to transaction timeout" - so every erasure was refused (measured on 18.6, the
embedded stack's fallback). Debian's 15 (CI) and compose's 16.4 have no such setting, and their startup packet
refuses a connection naming it: it is pinned only on a server that reports a version that has it."""


def count_options(dsn: str, server_version: int = 0) -> str:
    """The libpq `options` for the count: the DSN's own (PGOPTIONS or options=...), then COUNT_SETTINGS, which win.

    `server_version` (server_version_num, 0 unknown): on a server that has `transaction_timeout`, pinned too.
    """
    given = conninfo_to_dict(dsn).get("options") or os.environ.get("PGOPTIONS", "")
    name, value, since = TRANSACTION_TIMEOUT_SETTING
    settings = {**COUNT_SETTINGS, name: value} if server_version >= since else COUNT_SETTINGS
    return f"{given} {startup_options(settings)}".strip()


def count_session(dsn: str) -> psycopg.Connection[Any]:
    """The count's connection, COUNT_SETTINGS pinned at its start - and `transaction_timeout` on a server that has it.

    The server's version is known only once connected (its startup answer, no statement run): on 17+ that first
    connection is closed unused and the count connects again with the setting in its startup packet, which wins
    over the login's default before any transaction begins. A SET after connecting would run in a transaction
    the login's default already bounds (1 ms: a race the count may lose).
    """
    first = _connect(dsn, 0)
    version = first.info.server_version
    if version < TRANSACTION_TIMEOUT_SETTING[2]:
        return first
    first.close()
    return _connect(dsn, version)


def _connect(dsn: str, server_version: int) -> psycopg.Connection[Any]:
    options = count_options(dsn, server_version)
    return psycopg.connect(dsn, connect_timeout=10, application_name="tokenvault-cli erase", options=options)


MAX_ROWS_CHECKED = 10_000
"""Rows holding the tokens that `erase` verifies at most by default; more: it erases nothing (a bounded read)
unless the officer raises the bound (--max-rows-checked, up to MAX_ROWS_CEILING: walk47, W47-18)."""
MAX_ROWS_CEILING = 1_000_000
"""The most rows --max-rows-checked lets a command verify at once (memory and time per row: docs/performance.md,
"Rows verified at once")."""
MAX_LIST_BYTES = 64 * 1024 * 1024
"""The signed lists (32 bytes a row of their batch) it reads at most to verify them; more: it erases nothing. Each
list is at most MAX_LIST_BYTES_EACH (larger ones are not read: A48-2), so only rows naming over 2,000 full lists
reach it."""

HOLDING_TOKENS_WHERE = """
WHERE (l.masked_ip::pg_catalog.text OPERATOR(pg_catalog.=) ANY (%(tokens)s::pg_catalog.text[])
       AND l.masked_ip::pg_catalog.text COLLATE pg_catalog."C"
           OPERATOR(pg_catalog.=) ANY (%(tokens)s::pg_catalog.text[]))
   OR (l.masked_device_id::pg_catalog.text OPERATOR(pg_catalog.=) ANY (%(tokens)s::pg_catalog.text[])
       AND l.masked_device_id::pg_catalog.text COLLATE pg_catalog."C"
           OPERATOR(pg_catalog.=) ANY (%(tokens)s::pg_catalog.text[]))
"""
"""The rows of `user_logins AS l` holding one of %(tokens)s: matched by the column's own collation (its index) and
again byte for byte (`C`), so a collation the owner puts on a column does not make a token match another (A47-1)."""

ROWS_SQL = f"""
SELECT l.event_id::pg_catalog.text, l.user_id::pg_catalog.text, l.masked_ip::pg_catalog.text,
       l.masked_device_id::pg_catalog.text, l.create_date, l.row_manifest
FROM public.user_logins AS l
{HOLDING_TOKENS_WHERE}LIMIT %(limit)s
"""
"""Every row holding one of the tokens (the person's and the others'), with what its digest covers and its list.

Each token matched twice (attack 47, A47-1): with the column's collation, which its index has (a lookup, not a
scan), and byte for byte (`COLLATE "C"`, explicit, so it wins over the column's): a nondeterministic collation the
database owner puts on the column does not make a token match another differing in case. REACH_SQL likewise."""
ROWS_COUNT_SQL = f"SELECT count(*) FROM ({ROWS_SQL.replace('LIMIT %(limit)s', '')}) AS r"
"""How many rows hold the tokens when more than the bound do: the refusal names the --max-rows-checked to give."""
LISTS_SIZE_SQL = """
SELECT count(*), coalesce(sum(length(m.digests)), 0)::pg_catalog.int8 FROM public.user_login_manifests AS m
WHERE m.manifest_id OPERATOR(pg_catalog.=) ANY (%(ids)s::pg_catalog.uuid[])
  AND length(m.digests) OPERATOR(pg_catalog.<=) %(each)s::pg_catalog.int4
"""
LISTS_SQL = """
SELECT m.manifest_id, m.digests, m.signature::pg_catalog.text, m.signed_at FROM public.user_login_manifests AS m
WHERE m.manifest_id OPERATOR(pg_catalog.=) ANY (%(ids)s::pg_catalog.uuid[])
  AND length(m.digests) OPERATOR(pg_catalog.<=) %(each)s::pg_catalog.int4
"""
"""The lists named, each at most one ETL batch (MAX_LIST_BYTES_EACH, attack 48, A48-2): a larger one is no list the
ETL signed - never read nor summed, the rows naming it do not verify (--accepting-unverified-rows counts them)."""
LIST_ROWS_SQL = """
SELECT l.event_id::pg_catalog.text, l.user_id::pg_catalog.text, l.masked_ip::pg_catalog.text,
       l.masked_device_id::pg_catalog.text, l.create_date, l.row_manifest
FROM public.user_logins AS l
WHERE l.row_manifest OPERATOR(pg_catalog.=) ANY (%(ids)s::pg_catalog.uuid[])
LIMIT %(limit)s
"""
"""Every row naming one of the lists (the index of migration 0069), as ROWS_SQL's columns: are the lists whole?"""
ROWS_NAMING_LISTS_SQL = """
SELECT l.row_manifest, count(*) FROM public.user_logins AS l
WHERE l.row_manifest OPERATOR(pg_catalog.=) ANY (%(ids)s::pg_catalog.uuid[])
GROUP BY l.row_manifest
"""
"""How many rows of user_logins name each of the lists (the index of migration 0069; counted, none read): which list
is named by more rows than it lists when the whole-list read is past its bound (attack 49, A49-4)."""
LIST_ROWS_PAGE = 10_000
"""Rows of LIST_ROWS_SQL fetched at a time (a server-side cursor: review 47, R47-12). Each FETCH is a statement of
its own under COUNT_SETTINGS' statement_timeout; all of them run in the count's one transaction, so its snapshot."""


@dataclass(frozen=True)
class RowCheck:
    """The rows of user_logins holding the tokens, checked against the ETL's signatures (attack 41, A41-1)."""

    rows: int
    """Rows read (the person's and the others')."""
    unsigned: int
    """Rows naming no signed list: loaded before migration 0068, by an ETL that signs nothing, or cleared since."""
    failing: int
    """Rows naming a list that is missing, not signed by the ETL's key, or that does not list the row as it is."""
    too_many: bool = False
    """More rows (`bound`) or lists (MAX_LIST_BYTES) than the command reads: none checked. Past the rows' bound,
    `rows` is how many there are (counted, not read), or `bound` + 1 when not counted."""
    bound: int = MAX_ROWS_CHECKED
    """The most rows the command verified at once (--max-rows-checked): what `too_many` was past (walk47, W47-18)."""
    lists_too_large: bool = False
    """`too_many` for the lists (MAX_LIST_BYTES, or rows naming them beyond their listed rows and `bound`):
    --max-rows-checked lifts the second only."""
    unknown_key: int = 0
    """Rows naming a list signed by a key version the public keys file lacks that a refresh of the file may bring
    (not counted in `failing`): newer than every version it holds, the list signed after the file was read - the key
    was rotated since (walk46, W46-2). A version no refresh brings (attack 49, A49-3: `vault:v99:` planted by the
    ETL's role) is a list that does not verify: its rows are in `failing`."""
    versions_lacking: tuple[int, ...] = ()
    """The key versions those lists name, which the file lacks."""
    unknown_key_rows: tuple[tuple[str, str], ...] = ()
    """The rows counted in `unknown_key`: (event id, signed list), named in the refusal (attack 49, A49-3)."""
    versions_held: tuple[int, ...] = ()
    """The key versions the public keys file holds (when it was read)."""
    whole_lists: bool = False
    """Every row naming one of the signed lists that verify was read too, and each list's rows counted (A41-1's
    deleted, copied and re-pointed rows): `missing`, `copied`, `changed` and `lists_missing` are counts."""
    missing: int = 0
    """Rows those lists list that no row of user_logins matches as signed: deleted (the data team's retention, or
    the database owner), changed since (then also counted in `changed`), or made to name another list or none.
    A deleted row may have held the tokens for another person, whom the count then did not see."""
    lists_missing: int = 0
    """Lists with one or more of their rows missing."""
    copied: int = 0
    """Rows beyond the first matching one listed row: copies of a signed row (no load makes one: the ETL loads an
    event id once, and user_logins' unique index on event_id refuses a second - unless its owner drops it)."""
    changed: int = 0
    """Rows naming one of those lists that it does not list as they are: changed since the ETL signed them (a row
    re-pointed away from the tokens read, which erase then never reads itself), or written under the list."""
    failing_rows: tuple[tuple[str, str], ...] = ()
    """The rows counted in `failing`: (event id, signed list), for the security team (attack 47, A47-3)."""
    failing_listed: int = 0
    """Of `failing`, rows naming a list that verifies (with `whole_lists`, also counted in `changed`)."""
    table_problems: tuple[str, ...] = ()
    lists_overnamed: tuple[tuple[str, int, int], ...] = ()
    """With `lists_too_large` past the rows naming the lists: (list, rows of user_logins naming it, rows it lists)
    for each list named by more rows than it lists, the most beyond first - rows no ETL load made (attack 49,
    A49-4: 10,002 rows the ETL's role inserted naming P's batch list, holding no token, blocked P's erasure)."""
    cleared: int = 0
    """Of `unsigned`, rows a signed list that verifies lists as they are: the ETL loaded them signed and their
    row_manifest was emptied since - no load, no retention does that: the database owner (walk47, W47-7). Not
    counted in `missing`."""
    failing_days: tuple[date, date] | None = None
    """The first and last create_date of the rows that do not verify and of the lists with rows changed's
    signing days (UTC): `audit login-rows --since/--until` lists them (walk47, W47-1)."""
    missing_signed: tuple[date, date] | None = None
    """The first and last day (UTC) the lists with rows missing were signed: `audit login-rows --since/--until`
    finds them (walk47, W47-1)."""
    """`audit login-rows` only: what makes user_logins other than the plain table, compared exactly, that `erase`
    and `reveal --verify-rows` expect (row_owners: a view, a nondeterministic collation; attack 47)."""

    def unverified(self) -> int:
        """Distinct rows that do not verify, those read and the others of their batches (`changed`).

        What `erase --accepting-unverified-rows N` confirms (attack 47, A47-3).
        """
        return self.failing + (self.changed - self.failing_listed if self.whole_lists else 0)


@dataclass(frozen=True)
class Reach:
    """Who else holds the tokens to erase, as user_logins answered at one moment."""

    person: tuple[str, ...]
    held: dict[str, TokenReach]
    """Every token some row holds (tokens in no row are left out)."""
    other_people: int
    """N: distinct other people across the tokens that reach them (what --including-other-people confirms)."""
    other_rows: int
    """Distinct rows of those people holding one or more of those tokens."""
    check: RowCheck | None = field(default=None, compare=False)
    """The rows holding the tokens verified against the ETL's signatures, in the count's snapshot (`verify_with`)."""
    unheld: tuple[str, ...] | None = None
    """Of the tokens asked for, those no row that verifies (or is unsigned) holds whose user id is exactly one of
    `person` - with no person named, no such row at all (row_owners.reach_of_rows); None: rows not verified."""
    persons: PersonsTokens | None = field(default=None, compare=False)
    """Tokens the person's own verified rows hold that were not given (`the_persons_rows`; attack 50, A50-1)."""

    def reaches(self, token: TokenReach) -> bool:
        """Whether erasing this token takes a value from someone else's rows.

        With the person named: any row not theirs. Without: the command cannot tell whose request
        it is, so tokens held by one person's rows only are taken as theirs, and once the rows
        holding them are several people's - one token shared, or tokens of different people
        (review 37, R37-8) - every token reaches all of them (the totals count them all); a row that does not
        verify is one more person even alone (review 47, R47-5), so it makes every token reach as well.
        """
        if self.person:
            return token.other_rows > 0
        # Review 47, R47-5: rows that do not verify are nobody's own, so they reach whoever else holds the tokens.
        return self.other_people > 1 or any(t.unverified_rows > 0 for t in self.held.values())

    def reaching(self, tokens: Sequence[str] | None = None) -> list[TokenReach]:
        """The tokens (of `tokens`, default all) that reach other people, in the order given."""
        order = list(dict.fromkeys(tokens if tokens is not None else self.held))
        return [self.held[t] for t in order if t in self.held and self.reaches(self.held[t])]


def count_reach(
    dsn: str,
    tokens: Sequence[str],
    person: Sequence[str],
    verify_with: Callable[[], PublicKeys] | None = None,
    whole_lists: bool = False,
    exact_columns: bool = False,
    max_rows: int = MAX_ROWS_CHECKED,
    the_persons_rows: bool = False,
    kept: Sequence[str] = (),
) -> Reach:
    """Count, as the analysts' read-only role, the rows of user_logins holding `tokens`, the person's and others'.

    `verify_with`: also check those rows against the ETL's signatures (`Reach.check`), in the count's snapshot
    (one read-only repeatable-read transaction); called for the public keys only when a row names a list. Then
    whose each row is, is decided from the rows verified (row_owners).
    `whole_lists`: and read every row of the lists those rows name, counting listed rows missing, changed, copied.
    `exact_columns`: QueryError when SQL's comparisons on user_logins are not exact (row_owners.column_problems:
    `reveal --query`'s own SQL relies on them). `max_rows`: the most rows verified (else RowCheck.too_many).
    `the_persons_rows` (with `person` and `verify_with`): also every row of the person's, read by user id in the same
    snapshot and under the same checks (Reach.persons: the tokens their verified rows hold neither given nor `kept`).
    """
    wanted = list(dict.fromkeys(tokens))
    try:
        with count_session(dsn) as conn:
            conn.read_only = True
            if verify_with is not None:  # the count and the rows checked: one snapshot
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            rows = conn.execute(REACH_SQL, {"tokens": wanted, "person": list(person), "named": bool(person)}).fetchall()
            checked = _check_rows(conn, wanted, verify_with, whole_lists, max_rows) if verify_with is not None else None
            persons = None
            if the_persons_rows and person and verify_with is not None and checked and not checked[0].too_many:
                persons = persons_tokens(conn, person, [*wanted, *kept], verify_with, max_rows)
            if checked is not None and (problems := relation_problems(conn)):
                raise QueryError(RELATIONS_NOT_PLAIN.format(problems="; ".join(problems)))
            if checked is not None and (problems := indexes_problems(conn, dsn)):
                raise QueryError(INDEXES_NOT_BUILT_IN.format(problems="; ".join(problems)))
            if exact_columns and (problems := column_problems(conn)):
                raise QueryError(COLUMNS_NOT_EXACT.format(problems="; ".join(problems)))
    except psycopg.Error as error:
        message = database_failure(error)
        if "row-level security" in message:  # row_security = off met a policy (COUNT_SETTINGS)
            message += f"; {POLICY_HIDES_ROWS}"
        raise QueryError(f"counting the rows of user_logins that hold these tokens failed: {message}") from None
    reach = _reach_of(rows, wanted, person)
    if checked is None:
        return reach
    check, read, untrusted = checked
    if check.too_many:  # nothing verified: the caller refuses on check.too_many
        return Reach(reach.person, reach.held, reach.other_people, reach.other_rows, check)
    # Attack 47, A47-1: whose a row is, decided from the rows verified, comparing exactly - not SQL's equality.
    exact = reach_of_rows(read, untrusted, wanted, person)
    return Reach(tuple(person), exact.held, exact.other_people, exact.other_rows, check, exact.unheld, persons)


PERSONS_ROWS_SQL = """
SELECT l.event_id::pg_catalog.text, l.user_id::pg_catalog.text, l.masked_ip::pg_catalog.text,
       l.masked_device_id::pg_catalog.text, l.create_date, l.row_manifest
FROM public.user_logins AS l
WHERE l.user_id::pg_catalog.text OPERATOR(pg_catalog.=) ANY (%(person)s::pg_catalog.text[])
  AND l.user_id::pg_catalog.text COLLATE pg_catalog."C" OPERATOR(pg_catalog.=) ANY (%(person)s::pg_catalog.text[])
LIMIT %(limit)s
"""
"""Every row of the person's (--user-id's), as ROWS_SQL's columns: matched by the column's collation (migration 0073's
index) and byte for byte, as HOLDING_TOKENS_WHERE matches tokens (A47-1); whose each is, Python decides again."""
PERSONS_ROWS_COUNT_SQL = f"SELECT count(*) FROM ({PERSONS_ROWS_SQL.replace('LIMIT %(limit)s', '')}) AS r"
"""How many rows are the person's when more than the bound are: the refusal names the --max-rows-checked to give."""


@dataclass(frozen=True)
class PersonsTokens:
    """The tokens the person's own rows hold that the officer did not give (attack 50, A50-1)."""

    rows: int
    """The person's rows read (past `bound`: how many there are, counted, and none verified)."""
    ungiven: tuple[str, ...]
    """Tokens held by rows whose user id is exactly one of --user-id's and that verify against the ETL's signature,
    not among the tokens given, sorted. Rows that do not verify or carry no signature are nobody's own (A47-2)."""
    too_many: bool = False
    """More rows of the person's (or lists they name) than `bound`: none verified, the erasure is refused."""
    bound: int = MAX_ROWS_CHECKED


def persons_tokens(
    conn: psycopg.Connection[Any],
    person: Sequence[str],
    wanted: Sequence[str],
    keys: Callable[[], PublicKeys],
    max_rows: int = MAX_ROWS_CHECKED,
) -> PersonsTokens:
    """Every row of `person`'s read by user id, in `conn`'s snapshot; the tokens of those that verify, not `wanted`.

    Attack 50, A50-1: the officer collects the person's tokens with a query of his own, which nothing checks - the
    database owner hid one of the person's rows from it (a lying index, a row-level security policy) and undid it
    before `erase`, whose checks then found nothing, and the hidden row kept its values. Read here, under the
    count's checks (row_security off, indexes built in, plain tables), the person's rows are the erasure's own
    collection. Only rows holding a token not given are verified (their lists read): usually none.
    """
    rows = conn.execute(PERSONS_ROWS_SQL, {"person": list(person), "limit": max_rows + 1}).fetchall()
    if len(rows) > max_rows:
        ((found,),) = conn.execute(PERSONS_ROWS_COUNT_SQL, {"person": list(person)}).fetchall()
        return PersonsTokens(int(found), (), too_many=True, bound=max_rows)
    people, given = set(person), set(wanted)

    def others(row: tuple[Any, ...]) -> list[str]:
        return [v for v in (row[2], row[3]) if isinstance(v, str) and v and v not in given]

    holding = [r for r in rows if isinstance(r[1], str) and r[1] in people and others(r)]
    if not holding:
        return PersonsTokens(len(rows), ())
    check, findings = verify_rows(conn, holding, keys, max_rows=max_rows)
    if check.too_many:
        return PersonsTokens(len(rows), (), too_many=True, bound=max_rows)
    bad = {f.row for f in findings if isinstance(f, RowFinding)}
    found_tokens = {t for n, r in enumerate(holding) if n not in bad and r[-1] is not None for t in others(r)}
    return PersonsTokens(len(rows), tuple(sorted(found_tokens)))


def _check_rows(
    conn: psycopg.Connection[Any],
    tokens: list[str],
    keys: Callable[[], PublicKeys],
    whole_lists: bool,
    max_rows: int = MAX_ROWS_CHECKED,
) -> tuple[RowCheck, list[tuple[Any, ...]], set[int]]:
    """Each row holding `tokens` recomputed (row_digest) and found in its list, whose signature verifies offline.

    Also the rows read, and the indexes of those that cannot be trusted for whose they are: that do not verify,
    or are signed by a key version the keys file lacks (unsigned rows are trusted once the officer confirms them).
    """
    rows = conn.execute(ROWS_SQL, {"tokens": tokens, "limit": max_rows + 1}).fetchall()
    check, findings = verify_rows(conn, rows, keys, whole_lists=whole_lists, max_rows=max_rows)
    if check.too_many and not check.lists_too_large:  # how many hold them: the --max-rows-checked to give (W47-18)
        check = replace(check, rows=count_rows_holding(conn, tokens))
    return check, rows, {f.row for f in findings if isinstance(f, RowFinding) and f.finding not in UNSIGNED_FINDINGS}


def indexes_problems(conn: psycopg.Connection[Any], dsn: str) -> list[str]:
    """The indexes of the tables read not built from PostgreSQL's own pieces (attack 49, A49-2), seen by two snapshots.

    `conn`'s, and a fresh one: a second session's, while `conn`'s transaction is open, run after its reads.

    The planner uses the indexes committed when it plans, not those of the transaction's snapshot: an index made
    after the snapshot was taken may answer a later read of it, and only a fresh snapshot sees it. One a read used
    is in that fresh one too: it cannot be dropped while the read's transaction holds its lock on the table.
    """
    with count_session(dsn) as fresh:
        fresh.read_only = True
        now = index_problems(fresh)
    return list(dict.fromkeys([*index_problems(conn), *now]))


def count_rows_holding(conn: psycopg.Connection[Any], tokens: list[str]) -> int:
    """How many rows of user_logins hold `tokens` (ROWS_SQL's match), none read: counted past the bound."""
    ((found,),) = conn.execute(ROWS_COUNT_SQL, {"tokens": tokens}).fetchall()
    return int(found)


@dataclass(frozen=True)
class RowFinding:
    """A row that does not verify, carries no signature, or is signed by a key version the keys file lacks."""

    event_id: str
    manifest_id: uuid.UUID | None
    finding: str
    """`does not verify`, `unsigned`, `signature cleared ...`, or `key version vN not in the keys file`."""
    row: int = -1
    """Its index in the rows verified."""
    signed_at: datetime | None = None
    """When the list it names (or, its signature cleared, lists it) was signed."""
    version_lacking: int | None = None
    """The key version its list is signed with that the keys file lacks (a rotation since the file was written)."""


UNSIGNED = "unsigned"
DOES_NOT_VERIFY = "does not verify"
SIGNATURE_CLEARED = "signature cleared: unsigned, listed as it is by this signed list (row_manifest emptied since)"
"""An unsigned row a signed list that verifies lists as it is (walk47, W47-7): the owner emptied its row_manifest."""
UNSIGNED_FINDINGS = (UNSIGNED, SIGNATURE_CLEARED)
"""Findings of rows that carry no signature: whose they are, the officer confirms (--accepting-unsigned-rows)."""


@dataclass(frozen=True)
class ListFinding:
    """A signed list whose rows are not all in user_logins as signed, some changed or copied (`whole_lists`)."""

    manifest_id: uuid.UUID
    listed: int
    """Rows the list lists."""
    present: int
    """Of those, rows found in user_logins as signed (naming this list, their digest listed)."""
    copied: int
    """Rows beyond the first matching one listed row."""
    changed: int = 0
    """Rows naming this list that it does not list as they are."""
    cleared: int = 0
    """Listed rows present as they are but naming no list (their row_manifest emptied: walk47, W47-7)."""
    signed_at: datetime | None = None
    """When the ETL signed the list (user_login_manifests.signed_at): its batch's load time."""

    def finding(self) -> str:
        """`N of M listed rows missing`, `K copies of listed rows`, `J rows naming it not listed`: counts only."""
        said = (
            [f"{self.listed - self.present} of {self.listed} listed rows missing"] if self.present < self.listed else []
        )
        if self.copied:
            said.append(plural(self.copied, "copy", "copies") + " of listed rows")
        if self.changed:
            said.append(f"{plural(self.changed, 'row')} naming it not listed as they are (changed since)")
        if self.cleared:
            said.append(
                f"{plural(self.cleared, 'listed row')} present with its signature cleared (row_manifest emptied)"
            )
        return "; ".join(said)


def verify_rows(
    conn: psycopg.Connection[Any],
    rows: Sequence[tuple[Any, ...]],
    keys: Callable[[], PublicKeys],
    whole_lists: bool = False,
    also_lists: Sequence[uuid.UUID] = (),
    max_rows: int = MAX_ROWS_CHECKED,
) -> tuple[RowCheck, list[RowFinding | ListFinding]]:
    """The rows (ROWS_SQL's columns) checked against their signed lists; what each row found wrong is.

    `whole_lists`: the lists those rows name (and `also_lists`) read whole too: which listed rows are missing,
    changed or copied (ListFinding). A list no row names any more is found only through `also_lists` (audit login-rows).
    """
    if len(rows) > max_rows:
        return RowCheck(len(rows), 0, 0, too_many=True, bound=max_rows), []
    named = sorted({m for *_, m in rows if m is not None} | set(also_lists), key=str)
    findings: list[RowFinding | ListFinding] = [
        RowFinding(str(r[0]), None, UNSIGNED, n) for n, r in enumerate(rows) if r[-1] is None
    ]
    unsigned = len(findings)
    if not named:
        return RowCheck(len(rows), unsigned, 0, whole_lists=whole_lists), findings
    bounded = {"ids": named, "each": MAX_LIST_BYTES_EACH}
    ((_lists, size),) = conn.execute(LISTS_SIZE_SQL, bounded).fetchall()
    if int(size) > MAX_LIST_BYTES:
        return RowCheck(len(rows), unsigned, 0, too_many=True, bound=max_rows, lists_too_large=True), []
    public_keys = keys()
    lists = conn.execute(LISTS_SQL, bounded).fetchall()
    now = database_now(conn)  # A50-2: after the read, every list it saw was committed before
    listed: dict[uuid.UUID, frozenset[bytes]] = {}
    lacking: dict[uuid.UUID, int] = {}
    never: dict[uuid.UUID, int] = {}
    signed: dict[uuid.UUID, datetime] = {}
    for manifest_id, digests, signature, signed_at in lists:
        typed = isinstance(manifest_id, uuid.UUID) and isinstance(digests, bytes) and isinstance(signature, str)
        if typed and isinstance(signed_at, datetime):
            signed[manifest_id] = signed_at.astimezone(UTC)
        if typed and (version := public_keys.lacks_version_of(signature)) is not None:
            # Attack 49, A49-3: only a version a refresh may bring is a stale file; any other does not verify.
            plausible = public_keys.may_come_with_a_refresh(version, signed.get(manifest_id), now)
            (lacking if plausible else never)[manifest_id] = version
        elif typed and public_keys.verify(signature, signed_input(manifest_id, digests)):
            listed[manifest_id] = digests_of(digests)
    cleared = _signatures_cleared(rows, listed)
    findings = [  # walk47, W47-7: not merely unsigned - the owner emptied their row_manifest
        RowFinding(f.event_id, cleared[f.row], SIGNATURE_CLEARED, f.row, signed.get(cleared[f.row]))
        if isinstance(f, RowFinding) and f.row in cleared
        else f
        for f in findings
    ]
    wholes: list[ListFinding] = []
    if whole_lists and listed:
        counted = _list_rows_counted(conn, listed, rows, cleared, signed, max_rows)
        if counted is None:
            over = lists_overnamed(conn, {m: len(d) for m, d in listed.items()})
            return (
                RowCheck(
                    len(rows), unsigned, 0, too_many=True, bound=max_rows, lists_too_large=True, lists_overnamed=over
                ),
                [],
            )
        wholes = [w for w in counted if w.present < w.listed or w.copied or w.changed or w.cleared]
    failing = unknown_key = failing_listed = 0
    for n, (event_id, user_id, masked_ip, masked_device_id, created, manifest_id) in enumerate(rows):
        if manifest_id is None:
            continue
        if manifest_id in lacking:
            unknown_key += 1
            findings.append(
                RowFinding(
                    str(event_id),
                    manifest_id,
                    f"key version v{lacking[manifest_id]} not in the keys file",
                    n,
                    signed.get(manifest_id),
                    lacking[manifest_id],
                )
            )
            continue
        day = created if isinstance(created, date) else None
        if row_digest(event_id, user_id, masked_ip, masked_device_id, day) not in listed.get(manifest_id, frozenset()):
            failing += 1
            failing_listed += manifest_id in listed
            said = DOES_NOT_VERIFY + (_no_such_version(never[manifest_id], public_keys) if manifest_id in never else "")
            findings.append(RowFinding(str(event_id), manifest_id, said, n, signed.get(manifest_id)))
    check = RowCheck(
        len(rows),
        unsigned,
        failing,
        unknown_key=unknown_key,
        versions_lacking=tuple(sorted(set(lacking.values()))),
        versions_held=tuple(sorted(public_keys.by_version)),
        unknown_key_rows=tuple(
            (f.event_id, str(f.manifest_id)) for f in findings if isinstance(f, RowFinding) and f.manifest_id in lacking
        ),
        whole_lists=whole_lists,
        missing=sum(w.listed - w.present for w in wholes),
        lists_missing=sum(1 for w in wholes if w.present < w.listed),
        copied=sum(w.copied for w in wholes),
        changed=sum(w.changed for w in wholes),
        failing_rows=tuple(
            (f.event_id, str(f.manifest_id))
            for f in findings
            if isinstance(f, RowFinding) and f.finding.startswith(DOES_NOT_VERIFY)
        ),
        failing_listed=failing_listed,
        cleared=len(cleared),
        missing_signed=_days_signed([w for w in wholes if w.present < w.listed]),
        failing_days=_span(
            [rows[f.row][4] for f in findings if isinstance(f, RowFinding) and f.finding.startswith(DOES_NOT_VERIFY)]
            + [w.signed_at.date() for w in wholes if w.changed and w.signed_at is not None]
        ),
    )
    return check, [*findings, *wholes]


def database_now(conn: psycopg.Connection[Any]) -> datetime:
    """The database's clock now (clock_timestamp(), UTC): no list read before was signed later (attack 50, A50-2).

    signed_at is the database's now() of the transaction that inserted the list, which committed before a read that
    sees it: a later signed_at was set by the inserter (the ETL's role may), not by the clock. The reader's clock
    with 5 minutes' skew let a list dated 4 minutes ahead pass as a rotation of the key right after a refresh.
    """
    ((now,),) = conn.execute("SELECT pg_catalog.clock_timestamp()").fetchall()
    return now.astimezone(UTC) if isinstance(now, datetime) else datetime.min.replace(tzinfo=UTC)  # none: too old


def _no_such_version(version: int, keys: PublicKeys) -> str:
    """Why a list's key version that the keys file lacks is no stale file: no refresh brings it (attack 49, A49-3)."""
    newest = max(keys.by_version, default=0)
    when = f", written {keys.read_at:%Y-%m-%d %H:%M:%S} UTC," if keys.read_at is not None else ""
    why = (
        f"not newer than its newest, v{newest}"
        if version <= newest
        else "though the list is dated before the file was read from OpenBao (or ahead of the database's clock)"
    )
    return f" (its list names key version v{version}, which the keys file{when} lacks {why}: no refresh brings it)"


def rows_naming(conn: psycopg.Connection[Any], lists: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many rows of user_logins name each of `lists` (ROWS_NAMING_LISTS_SQL); a list no row names is left out."""
    found = conn.execute(ROWS_NAMING_LISTS_SQL, {"ids": list(lists)}).fetchall()
    return {m: int(n) for m, n in found if isinstance(m, uuid.UUID)}


def lists_overnamed(conn: psycopg.Connection[Any], listing: dict[uuid.UUID, int]) -> tuple[tuple[str, int, int], ...]:
    """(list, rows naming it, rows it lists) for each list of `listing` named by more rows than it lists.

    `listing`: each list's rows it lists. The most beyond first (attack 49, A49-4).
    """
    naming = rows_naming(conn, list(listing))
    over = [(str(m), naming[m], n) for m, n in listing.items() if naming.get(m, 0) > n]
    return tuple(sorted(over, key=lambda o: (o[2] - o[1], o[0])))


def _signatures_cleared(
    rows: Sequence[tuple[Any, ...]], listed: dict[uuid.UUID, frozenset[bytes]]
) -> dict[int, uuid.UUID]:
    """The unsigned rows (their index) a list that verifies lists as they are, and that list (walk47, W47-7).

    The digest covers the row's event id, user id, tokens and day, not its row_manifest: such a row is the one
    the ETL loaded and signed, its row_manifest emptied since. Counted as missing from its list, it sent the officer
    to ask whether retention had deleted a row that was there all along.
    """
    found: dict[int, uuid.UUID] = {}
    for n, (event_id, user_id, masked_ip, masked_device_id, created, manifest_id) in enumerate(rows):
        if manifest_id is None and listed:
            day = created if isinstance(created, date) else None
            digest = row_digest(event_id, user_id, masked_ip, masked_device_id, day)
            if (m := next((m for m, d in listed.items() if digest in d), None)) is not None:
                found[n] = m
    return found


def _span(days: Sequence[object]) -> tuple[date, date] | None:
    """The first and last of the dates among `days` (a create_date may be NULL); None when there is none."""
    known = sorted(d for d in days if isinstance(d, date))
    return (known[0], known[-1]) if known else None


def _days_signed(lists: Sequence[ListFinding]) -> tuple[date, date] | None:
    """The first and last day (UTC) these lists were signed; None when no date is known."""
    days = sorted(w.signed_at.date() for w in lists if w.signed_at is not None)
    return (days[0], days[-1]) if days else None


def _list_rows_counted(
    conn: psycopg.Connection[Any],
    listed: dict[uuid.UUID, frozenset[bytes]],
    read: Sequence[tuple[Any, ...]] = (),
    cleared: dict[int, uuid.UUID] | None = None,
    signed: dict[uuid.UUID, datetime] | None = None,
    max_rows: int = MAX_ROWS_CHECKED,
) -> list[ListFinding] | None:
    """Each list's rows in user_logins: how many of its listed rows are there as signed, how many more than once.

    Reads every row naming the lists (LIST_ROWS_SQL), at most their listed rows and `max_rows` more; None
    beyond (more rows name them than they list by that much: too many to read, the caller checks nothing).
    `cleared`: rows of `read` (the rows verified) present as a list lists them, their row_manifest emptied:
    there, not missing (W47-7).
    """
    limit = sum(len(d) for d in listed.values()) + max_rows
    matched: dict[uuid.UUID, Counter[bytes]] = {m: Counter() for m in listed}
    changed: Counter[uuid.UUID] = Counter()
    # Review 47, R47-12: streamed (a server-side cursor in the count's transaction and snapshot), only the counts
    # kept - read whole, up to ~2 million rows were held as Python tuples (~1 GB) only to be hashed and counted.
    with conn.cursor(name="tokenvault_list_rows") as cursor:
        cursor.itersize = LIST_ROWS_PAGE
        cursor.execute(LIST_ROWS_SQL, {"ids": list(listed), "limit": limit + 1})
        for n, (event_id, user_id, masked_ip, masked_device_id, created, manifest_id) in enumerate(cursor, 1):
            if n > limit:
                return None
            day = created if isinstance(created, date) else None
            digest = row_digest(event_id, user_id, masked_ip, masked_device_id, day)
            if digest in listed[manifest_id]:
                matched[manifest_id][digest] += 1
            else:
                changed[manifest_id] += 1
    there: dict[uuid.UUID, set[bytes]] = {m: set() for m in listed}
    for n, m in (cleared or {}).items():
        event_id, user_id, masked_ip, masked_device_id, created, _ = read[n]
        day = created if isinstance(created, date) else None
        digest = row_digest(event_id, user_id, masked_ip, masked_device_id, day)
        if digest not in matched[m]:
            there[m].add(digest)
    return [
        ListFinding(
            m,
            len(listed[m]),
            len(matched[m]) + len(there[m]),
            sum(n - 1 for n in matched[m].values()),
            changed[m],
            len(there[m]),
            (signed or {}).get(m),
        )
        for m in sorted(listed, key=str)
    ]


ROWS_BETWEEN_SQL = """
SELECT l.event_id::pg_catalog.text, l.user_id::pg_catalog.text, l.masked_ip::pg_catalog.text,
       l.masked_device_id::pg_catalog.text, l.create_date, l.row_manifest
FROM public.user_logins AS l
WHERE (l.create_date OPERATOR(pg_catalog.>=) %(since)s::pg_catalog.date
       AND l.create_date OPERATOR(pg_catalog.<=) %(until)s::pg_catalog.date)
   OR l.create_date IS NULL
LIMIT %(limit)s
"""
"""The rows of user_logins created in a range of days (`tokenvault audit login-rows`), as ROWS_SQL's columns - and
every row with no create_date, which no range finds (attack 47, A47-3: a row planted with a NULL date blocked
erasures while the security team's audit of every day found nothing)."""
LISTS_SIGNED_BETWEEN_SQL = """
SELECT m.manifest_id FROM public.user_login_manifests AS m
WHERE m.signed_at OPERATOR(pg_catalog.>=) %(since)s::pg_catalog.timestamptz
  AND m.signed_at OPERATOR(pg_catalog.<) %(before)s::pg_catalog.timestamptz
LIMIT %(limit)s
"""
"""The lists signed in a range of days (UTC): a list none of whose rows is left is named by no row."""


def check_rows_between(
    dsn: str, since: date, until: date, keys: Callable[[], PublicKeys], max_rows: int = MAX_ROWS_CHECKED
) -> tuple[RowCheck, list[RowFinding | ListFinding]]:
    """The rows of user_logins created from `since` to `until` (both included), verified as erase verifies its rows.

    For the security team once `erase` or `reveal --verify-rows` said rows do not verify (walk46, W46-6): which
    rows, by event id and signed list. At most `max_rows` rows (else RowCheck.too_many, none checked).
    The lists those rows name, and those signed in those days (UTC), are read whole as erase reads its lists:
    each list with rows missing, changed or copied is a ListFinding (attack 41's Left: rows deleted, re-pointed or
    copied by the database owner).
    """
    start = datetime(since.year, since.month, since.day, tzinfo=UTC)
    last = min(until, date.max - timedelta(1))
    before = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(1)
    try:
        with count_session(dsn) as conn:
            conn.read_only = True
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            params = {"since": since, "until": until, "limit": max_rows + 1}
            rows = conn.execute(ROWS_BETWEEN_SQL, params).fetchall()
            signed = conn.execute(
                LISTS_SIGNED_BETWEEN_SQL, {"since": start, "before": before, "limit": max_rows + 1}
            ).fetchall()
            if len(signed) > max_rows:
                return RowCheck(len(rows), 0, 0, too_many=True, bound=max_rows, lists_too_large=True), []
            also = [m for (m,) in signed]
            check, findings = verify_rows(conn, rows, keys, whole_lists=True, also_lists=also, max_rows=max_rows)
            shape = (*relation_problems(conn), *column_problems(conn), *indexes_problems(conn, dsn))  # erase refuses
            return replace(check, table_problems=shape), findings
    except psycopg.Error as error:
        message = database_failure(error)
        if "row-level security" in message:  # itself the finding to act on (walk47, W47-20)
            message += f"; {POLICY_HIDES_ROWS}"
        raise QueryError(f"reading the rows of user_logins failed: {message}") from None


_UNMATCHED = (
    "counting the rows of user_logins that hold these tokens failed: the database answered {what}, which cannot be"
    " matched to the tokens given (a setting of the login's sessions? e.g. a client_encoding default)"
)


def _reach_of(rows: Sequence[tuple[Any, ...]], wanted: Sequence[str], person: Sequence[str]) -> Reach:
    """The Reach REACH_SQL's rows say; QueryError for rows that do not match the tokens asked for (attack 38, M1).

    Each token row must name, as text, one of the tokens asked for, once, with whole-number counts, and one totals
    row must follow. Anything else (bytes from a session whose client encoding is not UTF8, a token not asked for)
    refuses: a count that cannot be matched would find no token held and let the erasure through unrefused.
    """
    asked = set(wanted)
    held: dict[str, TokenReach] = {}
    totals: list[tuple[int, int]] = []
    for row in rows:
        if len(row) != 4 or not all(type(n) is int for n in row[1:]):
            raise QueryError(_UNMATCHED.format(what="a row of other than four whole-number counts"))
        token, theirs, others, people = row
        if token is None:
            totals.append((others, people))
        elif not isinstance(token, str):
            raise QueryError(_UNMATCHED.format(what=f"a token as {type(token).__name__}, not text"))
        elif token not in asked or token in held:
            raise QueryError(_UNMATCHED.format(what="a token that is not one of those given"))
        else:
            held[token] = TokenReach(token, theirs, others, people)
    if len(totals) != 1:
        raise QueryError(_UNMATCHED.format(what=f"{len(totals)} rows of totals, not one"))
    ((other_rows, other_people),) = totals
    return Reach(tuple(person), held, other_people, other_rows)


def plural(count: int, one: str, many: str | None = None) -> str:
    """`1 row`, `2 rows`; `1 other person`, `2 other people`."""
    return f"{count} {one if count == 1 else (many or one + 's')}"
