"""`reveal --query`: run an analyst's SQL read-only, pick the token columns to reveal, reveal them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg

from tokenvault_client import DetokenizeOutcome, type_of_token


class QueryError(Exception):
    """The query could not be run or its result cannot be revealed; the message says why."""


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows, as the database returned them."""

    columns: list[str]
    rows: list[tuple[object, ...]]


DATABASE_UNREACHED = (
    "the database is down or refused the connection: check it and the DSN; on the embedded stack `make status`,"
    " `make up`"
)


def database_failure(error: psycopg.Error) -> str:
    """What the database said of `error`, or libpq's own words when the server said nothing.

    A connection refused, a server shutting down, a password refused or a connection lost mid-query
    carries no server diagnostic: the type's name, "OperationalError", was all that `reveal --query`,
    `erase`'s count and `audit login-rows` said of them (walk 53, W53-4). Printed through Failure, which
    escapes control characters.
    """
    primary: str | None = error.diag.message_primary
    if primary:
        return primary
    said = " ".join(str(error).split())
    if not said:
        return type(error).__name__
    if isinstance(error, psycopg.OperationalError):
        return f"{said} ({DATABASE_UNREACHED})"
    return said


def run_query(dsn: str, sql: str, max_rows: int) -> QueryResult:
    """Run `sql` in a read-only transaction (on top of the role's own read-only grants)."""
    try:
        with psycopg.connect(dsn, connect_timeout=10, application_name="tokenvault-cli") as conn:
            conn.read_only = True
            with conn.cursor() as cursor:
                cursor.execute(sql.encode())  # the analyst's own SQL, under a read-only role and transaction
                if cursor.description is None:
                    raise QueryError("the statement returned no rows: give a SELECT")
                columns = [d.name for d in cursor.description]
                rows = cursor.fetchmany(max_rows + 1)
    except psycopg.Error as error:
        raise QueryError(f"the query failed: {database_failure(error)}") from None
    if len(rows) > max_rows:
        raise QueryError(f"the query returned more than {max_rows} rows: add a LIMIT or raise --max-rows")
    return QueryResult(columns, rows)


PRODUCT_TOKEN_COLUMNS = ("masked_ip", "masked_device_id")
"""The columns of user_logins the ETL fills with tokens: the ones `reveal --query` reveals by default."""


def _count_tokens(result: QueryResult, index: int) -> tuple[int, int]:
    """(tokens, other non-null values) in column `index`."""
    tokens = others = 0
    for row in result.rows:
        value = row[index]
        if value is None:
            continue
        if isinstance(value, str) and type_of_token(value):
            tokens += 1
        else:
            others += 1
    return tokens, others


def token_columns(result: QueryResult, named: Sequence[str] | None = None) -> list[int]:
    """Positions of the columns to reveal: those `named`, else the product's token columns.

    By default only a column called masked_ip or masked_device_id whose every non-null value is
    a token: a token someone put in any other column (the ETL can insert rows) is not sent to
    the vault under the analyst's name unless the analyst names that column. A named column
    that is not in the result, or holds a value that is not a token, is a QueryError.
    """
    if named is None:
        return [
            index
            for index, name in enumerate(result.columns)
            if name in PRODUCT_TOKEN_COLUMNS and _count_tokens(result, index)[1] == 0
        ]  # one with a value that is no token is printed as it is (reveal_query says so)
    missing = [name for name in named if name not in result.columns]
    if missing:
        raise QueryError(
            f"--columns names {', '.join(missing)}, which the query does not return;"
            f" it returns: {', '.join(result.columns)}"
        )
    found = [index for index, name in enumerate(result.columns) if name in named]
    for index in found:
        others = _count_tokens(result, index)[1]
        if others:
            raise QueryError(
                f"column {result.columns[index]} holds {others} value(s) that are not tokens: leave it out of"
                " --columns (nothing was sent to the vault)"
            )
    return found


def other_token_columns(result: QueryResult, revealed: Sequence[int]) -> list[str]:
    """Names of the columns not revealed that nevertheless hold only tokens (and at least one)."""
    others = []
    for index, name in enumerate(result.columns):
        tokens, non_tokens = _count_tokens(result, index)
        if index not in revealed and tokens and not non_tokens:
            others.append(name)
    return others


def distinct_tokens(result: QueryResult, columns: Sequence[int]) -> list[str]:
    """Every token in those columns, once each, in order of first appearance."""
    seen: dict[str, None] = {}
    for row in result.rows:
        for index in columns:
            if row[index] is not None:
                seen.setdefault(str(row[index]), None)
    return list(seen)


def revealed_result(
    result: QueryResult,
    columns: Sequence[int],
    reveal: Callable[[list[str]], list[DetokenizeOutcome]],
    with_tokens: bool,
) -> QueryResult:
    """The result with each token column's values revealed (and the tokens kept beside them if asked)."""
    tokens = distinct_tokens(result, columns)
    by_token = dict(zip(tokens, reveal(tokens), strict=True))
    names: list[str] = []
    for index, name in enumerate(result.columns):
        if index in columns and with_tokens:
            names.append(f"{name}_token")
        names.append(name)
    rows = []
    for row in result.rows:
        out: list[object] = []
        for index, value in enumerate(row):
            if index in columns:
                if with_tokens:
                    out.append(value)
                out.append(None if value is None else by_token[str(value)])
            else:
                out.append(value)
        rows.append(tuple(out))
    return QueryResult(names, rows)
