"""The indexes of the tables the count reads, built from PostgreSQL's own pieces only (attack 49, A49-2).

The count, the rows' check and `audit login-rows --token` find the rows holding a token by `masked_ip = ANY(...)`:
an index lookup on a table of any size, and an index finds what its operator class's comparison says. The database
owner, as superuser, made an operator class whose btree comparison lied while a setting of his own session was on,
rebuilt `user_logins_masked_ip` with it and re-inserted another person's row with the lie on: its index entry sat
where no lookup looks, and `erase --user-id A` erased a value A shared with B with no word of B - every row still
verified (a sequential scan still found B's row; the `COLLATE "C"` pin filters the rows an index returned, it
cannot bring back one it never returned). The same on an index he added on user_id hid one of A's rows from the
query collecting A's tokens (A49-2b).

So every index of public.user_logins and public.user_login_manifests must be a plain column index built from
PostgreSQL's own pieces: its access method, operator classes (with every operator and support function of their
families) and collations built in - oid below 16384, FirstNormalObjectId: initdb's - and no expression or WHERE
(a partial index holds only the rows its WHERE admitted). The migrations ship only such indexes; an index a site adds
is fine when it is one too. The query compares oids only, with operators qualified `OPERATOR(pg_catalog....)` on
operands of exactly their types, in the count's session (search path `pg_catalog, pg_temp`).

What it cannot see: a superuser editing the catalog rows themselves (`UPDATE pg_index SET indclass = ...` after
building the index with his class, a replaced built-in function) or an index file's bytes - no query on the catalog
can be trusted against that; amcheck's `bt_index_check(index, true)` finds an index missing a row of its table.
"""

from __future__ import annotations

from typing import Any

import psycopg

from tokenvault_cli.row_owners import TABLES_READ, shown

BUILT_IN = "OPERATOR(pg_catalog.<) '16384'::pg_catalog.oid"
"""Below FirstNormalObjectId: an object initdb made, not anyone's addition."""

INDEXES_SQL = f"""
SELECT x.indexrelid::pg_catalog.regclass::pg_catalog.text,
       NOT (i.relam {BUILT_IN}),
       ARRAY(
           SELECT coalesce(o.opcname::pg_catalog.text, c.oid::pg_catalog.text)
           FROM pg_catalog.unnest(x.indclass::pg_catalog.oid[]) AS c(oid)
           LEFT JOIN pg_catalog.pg_opclass AS o ON o.oid OPERATOR(pg_catalog.=) c.oid
           WHERE NOT (c.oid {BUILT_IN}) OR o.oid IS NULL OR NOT (o.opcfamily {BUILT_IN})
              OR EXISTS (SELECT FROM pg_catalog.pg_amop AS p
                         WHERE p.amopfamily OPERATOR(pg_catalog.=) o.opcfamily
                           AND NOT (p.oid {BUILT_IN} AND p.amopopr {BUILT_IN}))
              OR EXISTS (SELECT FROM pg_catalog.pg_amproc AS p
                         WHERE p.amprocfamily OPERATOR(pg_catalog.=) o.opcfamily
                           AND NOT (p.oid {BUILT_IN} AND p.amproc::pg_catalog.oid {BUILT_IN}))
       ),
       ARRAY(
           SELECT c.oid::pg_catalog.regcollation::pg_catalog.text
           FROM pg_catalog.unnest(x.indcollation::pg_catalog.oid[]) AS c(oid) WHERE NOT (c.oid {BUILT_IN})
       ),
       x.indexprs IS NOT NULL,
       x.indpred IS NOT NULL
FROM pg_catalog.pg_index AS x
JOIN pg_catalog.pg_class AS i ON i.oid OPERATOR(pg_catalog.=) x.indexrelid
WHERE x.indrelid OPERATOR(pg_catalog.=) ANY (
    SELECT pg_catalog.to_regclass(n.name)::pg_catalog.oid
    FROM pg_catalog.unnest(%(tables)s::pg_catalog.text[]) AS n(name)
)
ORDER BY 1
"""
"""Per index of the tables read: its name, whether its access method is not built in, the operator classes that are
not (or whose family holds an operator or function that is not), the collations that are not, whether it has an
expression, a WHERE."""


def index_problems(conn: psycopg.Connection[Any]) -> list[str]:
    """The indexes of the tables the count reads that are not plain column indexes of built-in pieces (A49-2).

    As `conn`'s snapshot shows them; erase_reach.indexes_problems reads a fresh snapshot too (the planner's view).
    """
    problems = []
    for name, own_method, classes, collations, expression, partial in conn.execute(
        INDEXES_SQL, {"tables": list(TABLES_READ)}
    ).fetchall():
        what = []
        if own_method:
            what.append("an access method that is not built in")
        if classes:
            names = ", ".join(shown(c) for c in classes)
            what.append(f"operator class {names}, not built in (it, or an operator or function of its family)")
        if collations:
            what.append(f"collation {', '.join(shown(c) for c in collations)}, not built in")
        if expression:
            what.append("an expression")
        if partial:
            what.append("a WHERE (it holds only the rows its WHERE admits)")
        if what:
            problems.append(f"index {shown(name)} has {'; '.join(what)}")
    return problems


INDEXES_NOT_BUILT_IN = (
    "{problems}: a lookup by token may not find every row holding it - an index answers what its operator class's"
    " comparison says, and the count finds the rows through one (attack 49, A49-2); the database owner changed the"
    " table's indexes: report it to the security team"
)
