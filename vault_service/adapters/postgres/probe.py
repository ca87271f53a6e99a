"""The probe of the vault's database: a connection of the vault's own, outside its pool (`probe`).

Only a failure below the server is an outage. The database owner can make the server refuse a
new connection of the vault's (review 19, R19-7: `ALTER DATABASE ... CONNECTION LIMIT`, `REVOKE
CONNECT`, a role's LOGIN or connection limit), then hold the pooled ones with a lock; his own
pool exhaustion then read as an outage and held the tampering alerts. A refusal is REFUSED: the
database answers.

How a refusal is told from an outage. psycopg 3.3 (libpq 18) gives no SQLSTATE for a connection
that fails during start-up: libpq keeps the server's ErrorResponse to itself, so the
OperationalError carries only libpq's message (`sqlstate` None), whose severity word ("FATAL")
the server writes in its own lc_messages language. libpq answers the question itself: PQping
(psycopg's `pq.PGconn.ping`) says OK when the server asked for authentication or answered with
any SQLSTATE other than 57P03 ("any other SQLSTATE can be taken to indicate that the server is
up", libpq's fe-connect.c), REJECT for 57P03 (cannot_connect_now: starting up, shutting down,
in recovery), and NO_RESPONSE when no SQLSTATE came back at all (a connection refused at the
socket, a timeout, a name that does not resolve, TLS failing: libpq's own errors carry none). So
the probe connects as the pool does, and when that fails it pings with the same parameters: OK
is REFUSED, anything else SILENT. Checked with libpq 18 against PostgreSQL 15: a database or role connection
limit, CONNECT revoked, NOLOGIN, a wrong password, an unknown database, a bad startup option ping
OK; a smart shutdown REJECT; a closed port, an unresolvable name, `sslmode=require` against a
server without TLS NO_RESPONSE.

psycopg's binary build holds the GIL through PQping, which waits up to its connect_timeout: every
serving thread would stop meanwhile. So the ping follows only a probe that failed without timing
out (the server's answer came back, and comes back as fast to the ping), and waits at most
PING_SECONDS (libpq's least connect_timeout); a probe that timed out is SILENT.

Only an error's class is logged: libpq's message names the host, the role and the database.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo

from vault_service.domain.database_probe import ProbeAnswer

log = logging.getLogger(__name__)

PROBE_CONNECT_SECONDS = 5
"""Seconds the probe waits for its connection (libpq's `connect_timeout`)."""
PING_SECONDS = 2
"""Seconds PQping may wait after a failed probe (libpq's `connect_timeout`; it takes no less than 2)."""


def probe(conninfo: str, settings: Mapping[str, Any]) -> ProbeAnswer:
    """Connect to `conninfo` with `settings` (psycopg.connect's keywords, as the pool's) and run a statement.

    ANSWERED when that works, REFUSED when it fails and PQping finds the server up (it refused the
    connection at start-up, or failed the statement), SILENT otherwise (module docstring).
    """
    settings = {**settings, "connect_timeout": PROBE_CONNECT_SECONDS}
    try:
        with psycopg.connect(conninfo, **settings) as conn:
            conn.execute("SELECT 1")
        return ProbeAnswer.ANSWERED
    except psycopg.errors.ConnectionTimeout:
        log.info("the vault's database does not answer a probe either (ConnectionTimeout)")
        return ProbeAnswer.SILENT
    except psycopg.Error as error:
        failure = type(error).__name__
    ping = _ping(conninfo, settings)
    if ping is pq.Ping.OK:
        log.info("the vault's database refused a probe (%s; PQping: the server is up)", failure)
        return ProbeAnswer.REFUSED
    log.info("the vault's database does not answer a probe either (%s; PQping: %s)", failure, ping.name)
    return ProbeAnswer.SILENT


def _ping(conninfo: str, settings: Mapping[str, Any]) -> pq.Ping:
    """Libpq's PQping over `conninfo` and the libpq parameters of `settings` (not psycopg's own: autocommit...)."""
    known = _libpq_keywords()
    parameters = {key: value for key, value in settings.items() if key in known}
    try:
        ping_conninfo = make_conninfo(conninfo, **{**parameters, "connect_timeout": PING_SECONDS})
    except psycopg.Error:  # a connection string libpq cannot read: no attempt made
        return pq.Ping.NO_ATTEMPT
    return pq.Ping(pq.PGconn.ping(ping_conninfo.encode()))


@functools.cache
def _libpq_keywords() -> frozenset[str]:
    """The connection parameters libpq knows (host, port, options, application_name...)."""
    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())
