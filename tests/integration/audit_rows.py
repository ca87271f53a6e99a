"""The vault's audit rows a test's calls wrote: mark where the log ends, then read the rows after it.

Shared by the purpose and authorization tests: `last_audit_id` before the calls, then
`audit_rows_since` for one client's rows (action, outcome, purpose) in order. Read as the
stack's superuser (PG_ADMIN_DSN), as an auditor reads them.
"""

from __future__ import annotations

import psycopg


def last_audit_id(env: dict[str, str]) -> int:
    """The id of the audit log's last row (0 when it is empty)."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM vault.audit_log").fetchone()
    return int(row[0]) if row else 0


def audit_rows_since(env: dict[str, str], after: int, client: str) -> list[tuple[str, str, str]]:
    """(action, outcome, purpose) of `client`'s audit rows after `after`, in order."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(
            "SELECT action, outcome, purpose FROM vault.audit_log WHERE id > %s AND client = %s ORDER BY id",
            (after, client),
        ).fetchall()
    return [(str(action), str(outcome), str(purpose)) for action, outcome, purpose in rows]
