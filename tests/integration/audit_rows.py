"""The vault's audit rows a test's calls wrote: mark where the log ends, then read the rows after it.

Shared by the purpose and authorization tests: `last_audit_id` before the calls, then
`audit_rows_since` for one client's rows (action, outcome, purpose) in order; by the key job and
key command tests: `ticket_rows`, the rows of an action under a change ticket, naming the
certificate that `client_certificate` reads. Read as the stack's superuser (PG_ADMIN_DSN), as an
auditor reads them.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from vault_service.domain.audit import FETCH_SAW


def last_audit_id(env: dict[str, str]) -> int:
    """The id of the audit log's last row (0 when it is empty)."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM vault.audit_log").fetchone()
    return int(row[0]) if row else 0


def without_fetch_mark(outcome: str) -> str:
    """A Detokenize row's outcome without the audit id its fetch saw (attack 43, A43-1): not these tests' subject."""
    return str(outcome).split(FETCH_SAW)[0]


def audit_rows_since(env: dict[str, str], after: int, client: str) -> list[tuple[str, str, str]]:
    """(action, outcome, purpose) of `client`'s audit rows after `after`, in order."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(
            "SELECT action, outcome, purpose FROM vault.audit_log WHERE id > %s AND client = %s ORDER BY id",
            (after, client),
        ).fetchall()
    return [(str(action), without_fetch_mark(outcome), str(purpose)) for action, outcome, purpose in rows]


def ticket_rows(env: dict[str, str], action: str, reason: str) -> list[tuple[str, str, str, str]]:
    """(client, serial, cert sha256, outcome) of the rows `action` wrote under the ticket `reason`."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(
            "SELECT client, client_serial, client_cert_sha256, outcome FROM vault.audit_log"
            " WHERE action = %s AND purpose = %s ORDER BY id",
            (action, reason),
        ).fetchall()
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def client_certificate(env: dict[str, str], name: str) -> tuple[str, str]:
    """(serial in hex, SHA-256 in hex) of the stack's client certificate `name`, as audit rows name it."""
    cert = x509.load_pem_x509_certificate((Path(env["STACK_DIR"]) / "certs" / f"{name}.pem").read_bytes())
    return format(cert.serial_number, "x"), cert.fingerprint(hashes.SHA256()).hex()
