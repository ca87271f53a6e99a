"""Whose rows hold the tokens, decided in Python from the rows read and verified (attack 47, A47-1 and A47-2).

SQL equality compares with the column's collation, which the owner of public.user_logins chooses: a
nondeterministic ICU collation on user_id made `A47-ANN-X`'s rows `a47-ann-x`'s, and `count(DISTINCT user_id)`
one person of two, with no row changed - every row still verified (A47-1). And a token held by no row at all
passed the count - nothing to verify, no one else - while the owner's view showed the officer's query rows that
it hid from the count (A47-2). So `erase` and `reveal --verify-rows` decide from the rows the check read and
verified, comparing user ids and tokens as Python strings (exact code points, the bytes the digests cover): a row
is the person's only when it verifies (or is unsigned, which the officer confirms by number) and its user id is
exactly one of the --user-id given; a row that does not verify is nobody's own - counted as one more other person
whatever user id it shows. A token no such row of the person holds is not the person's as far as user_logins can
tell. The tables read must be plain tables (no view, no partitioned or inherited table, TABLE_SHAPE_SQL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg


@dataclass(frozen=True)
class TokenReach:
    """Rows of user_logins holding one token."""

    token: str
    their_rows: int
    """Rows of the person (the --user-id given); 0 when none was given."""
    other_rows: int
    other_people: int
    """Distinct user ids of the other rows (rows without a user id count as one more; a row that does not verify
    counts as one more person each)."""
    unverified_rows: int = field(default=0, compare=False)
    """Rows holding it that do not verify: with no person named, any makes the token reach (review 47, R47-5)."""


@dataclass(frozen=True)
class RowsReach:
    """What the rows read say, per token and in all (erase_reach.Reach's figures, decided here)."""

    held: dict[str, TokenReach]
    other_people: int
    other_rows: int
    unheld: tuple[str, ...]
    """Tokens asked for that no trusted row of the person holds (with no person named: no trusted row at all)."""


def reach_of_rows(
    rows: Sequence[tuple[Any, ...]], untrusted: set[int], wanted: Sequence[str], person: Sequence[str]
) -> RowsReach:
    """The reach of `wanted` over `rows` (ROWS_SQL's columns), exact comparisons; `untrusted`: rows' indexes.

    As REACH_SQL counts, with two differences: `theirs` is exact string equality of a trusted row's user id, and
    every untrusted row is another person of its own (its user id may be anyone's label) - with no person named
    too, where one such row alone makes every token asked for reach (review 47, R47-5).
    """
    people = set(person)
    holders: dict[str, list[int]] = {t: [] for t in wanted}
    for index, row in enumerate(rows):
        for value in {row[2], row[3]}:  # masked_ip, masked_device_id
            if isinstance(value, str) and value in holders:
                holders[value].append(index)

    def theirs(index: int) -> bool:
        user_id = rows[index][1]
        return index not in untrusted and isinstance(user_id, str) and user_id in people

    def who(index: int) -> tuple[str, object]:
        return ("row", index) if index in untrusted else ("user", rows[index][1])

    held: dict[str, TokenReach] = {}
    for token, indexes in holders.items():
        if indexes:
            others = [i for i in indexes if not theirs(i)]
            others_n, unverified = len({who(i) for i in others}), sum(1 for i in indexes if i in untrusted)
            held[token] = TokenReach(token, len(indexes) - len(others), len(others), others_n, unverified)
    everyone = {who(i) for indexes in holders.values() for i in indexes}
    # No person named: every token reaches once the rows are several people's (R37-8) - or once any row holding
    # them does not verify: it is nobody's own, one more person even when it is the only row (review 47, R47-5:
    # the A41-1 swap victim's token, held by the one changed row, was erased with no one else counted).
    several = len(everyone) > 1 or any(i in untrusted for indexes in holders.values() for i in indexes)
    reaching = [t for t, r in held.items() if (r.other_rows > 0 if person else several)]
    reached = {i for t in reaching for i in holders[t] if not theirs(i)}
    if person:
        unheld = tuple(t for t in dict.fromkeys(wanted) if not any(theirs(i) for i in holders[t]))
    else:
        unheld = tuple(t for t in dict.fromkeys(wanted) if all(i in untrusted for i in holders[t]))
    return RowsReach(held, len({who(i) for i in reached}), len(reached), unheld)


COLUMNS_SQL = """
SELECT a.attname::pg_catalog.text, a.atttypid::pg_catalog.regtype::pg_catalog.text,
       coalesce(c.collisdeterministic, true)
FROM pg_catalog.pg_attribute AS a
LEFT JOIN pg_catalog.pg_collation AS c ON c.oid OPERATOR(pg_catalog.=) a.attcollation
WHERE a.attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(%(table)s::pg_catalog.text)
  AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
"""
"""The columns of user_logins: name, type, whether their collation compares exactly (deterministic)."""
KEY_COLUMNS = ("event_id", "user_id", "masked_ip", "masked_device_id")
"""The columns a query finds a person's tokens by: of the built-in string types, which compare as PostgreSQL does."""
PLAIN_TYPES = ("character varying", "text")


def column_problems(conn: psycopg.Connection[Any]) -> list[str]:
    """What makes SQL's comparisons on user_logins other than exact: a nondeterministic collation, a key column's type.

    `reveal --query ... --verify-rows` cannot check the investigator's own SQL: with the owner's nondeterministic
    collation on user_id, `WHERE user_id = 'a47-ann-x'` also returned `A47-ANN-X`'s rows, every one verifying (A47-1).
    """
    problems = []
    for found, type_name, exact in conn.execute(COLUMNS_SQL, {"table": "public.user_logins"}).fetchall():
        name = shown(found)
        if not exact:
            problems.append(f"column {name} has a nondeterministic collation (equal strings that differ)")
        elif name in KEY_COLUMNS and type_name not in PLAIN_TYPES:
            problems.append(f"column {name} is of type {shown(type_name)}, not varchar or text")
    return problems


COLUMNS_NOT_EXACT = (
    "public.user_logins does not compare user ids and tokens exactly ({problems}): a query's"
    " `WHERE user_id = '...'` may return rows of other user ids as the person's, every one verifying (attack 47,"
    " A47-1); the database owner changed the table: report it to the security team"
)


def shown(name: object) -> str:
    """A name the database owner chose, printable and short, for a message."""
    text = str(name)
    return text if text.isprintable() and len(text) <= 64 else repr(text[:64])


RELATIONS_SQL = """
SELECT n.name, c.relkind::pg_catalog.text,
       EXISTS (SELECT FROM pg_catalog.pg_inherits AS i WHERE i.inhparent OPERATOR(pg_catalog.=) c.oid)
FROM pg_catalog.unnest(%(tables)s::pg_catalog.text[]) AS n(name)
LEFT JOIN pg_catalog.pg_class AS c ON c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(n.name)::pg_catalog.oid
"""
"""What each table the count reads is (relkind), and whether other tables inherit from it."""
TABLES_READ = ("public.user_logins", "public.user_login_manifests")
KINDS = {"v": "a view", "m": "a materialized view", "p": "a partitioned table", "f": "a foreign table"}


def relation_problems(conn: psycopg.Connection[Any]) -> list[str]:
    """The tables the count reads that are not plain tables: a view, a partitioned or inherited table (A47-2).

    The database owner replaced user_logins with a view that showed the investigator's query another person's rows
    as the person's and hid them from the count's session (its application_name), and the count verified nothing.
    Run after the rows are read: the lock they took keeps the table from being renamed or dropped until the end.
    """
    problems = []
    for name, kind, inherited in conn.execute(RELATIONS_SQL, {"tables": list(TABLES_READ)}).fetchall():
        if kind != "r":
            problems.append(f"{name} is {KINDS.get(kind, f'of relkind {shown(kind)}')}")
        elif inherited:
            problems.append(f"{name} has tables inheriting from it (their rows are read with its own)")
    return problems


RELATIONS_NOT_PLAIN = (
    "{problems}, not the plain table the ETL loads: what the count reads may not be the table's rows (attack 47,"
    " A47-2); the database owner changed it: report it to the security team"
)
