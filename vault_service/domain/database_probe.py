"""How the vault's database met a connection of the vault's own, opened outside its pool (a probe).

The audit upkeep probes after a round found no pooled connection within the pool's timeout: an
outage, or the pool exhausted (every pooled connection held by a statement waiting on a lock, the
database owner's on vault.tokens say: review 18, R18-12). Only an outage may hold the tampering
alerts (AuditRowsUnchecked, AuditRowsWaiting). The database owner decides, without superuser,
whether the server lets a new connection in (`ALTER DATABASE ... CONNECTION LIMIT`, `REVOKE
CONNECT ON DATABASE`, `ALTER ROLE ... NOLOGIN` or `CONNECTION LIMIT` on a role he administers), so
a server that refuses the probe answers: not an outage, and itself a sign that someone keeps the
vault out (review 19, R19-7).
"""

from __future__ import annotations

from enum import Enum


class ProbeAnswer(Enum):
    """What the vault's database did with the probe's connection."""

    ANSWERED = "answered"
    """It let the connection in and ran its statement."""
    REFUSED = "refused"
    """The server refused it during start-up (a connection limit of the database or role, no CONNECT
    privilege, the role's LOGIN taken away, pg_hba, a failed login) or failed its statement: the
    database answers; with the pool exhausted, it is keeping the vault out."""
    SILENT = "silent"
    """No server answered (connection refused at the socket, no answer within the timeout, a name that
    does not resolve, TLS failing), or it said it cannot take connections now (SQLSTATE 57P03:
    starting up, shutting down, in recovery): an outage."""

    @property
    def answers(self) -> bool:
        """Whether the database answered at all (the round's failure is then not an outage)."""
        return self is not ProbeAnswer.SILENT
