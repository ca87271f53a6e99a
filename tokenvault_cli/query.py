"""`reveal --query`: run an analyst's SQL read-only, find its token columns, reveal them."""

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
        diag = getattr(error, "diag", None)
        message = (diag.message_primary if diag else None) or type(error).__name__
        raise QueryError(f"the query failed: {message}") from None
    if len(rows) > max_rows:
        raise QueryError(f"the query returned more than {max_rows} rows: add a LIMIT or raise --max-rows")
    return QueryResult(columns, rows)


def token_columns(result: QueryResult) -> list[int]:
    """Positions of the columns whose every non-null value is a token (and that hold at least one)."""
    found = []
    for index in range(len(result.columns)):
        values = [row[index] for row in result.rows if row[index] is not None]
        if values and all(isinstance(v, str) and type_of_token(v) for v in values):
            found.append(index)
    return found


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
