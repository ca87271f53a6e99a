"""Which failures of the ETL's connection to PostgreSQL are refusals of its configuration (etl_service.errors).

A refusal stops the ETL with exit 1 naming the setting to fix (Misconfigured); anything else is the database
down, waited out (DependencyDown). Refusals made before a session - a login, a TLS handshake - reach psycopg 3.3
without a SQLSTATE: they are told by the server's or libpq's text (review 49, R49-1; etl50 for TLS).
"""

from __future__ import annotations

REFUSED_STATES = {
    "28P01": "the password of ETL_DATABASE_DSN was refused",
    "28000": "the role of ETL_DATABASE_DSN may not log in",
    "3D000": "the database of ETL_DATABASE_DSN does not exist",
    "42501": "the role of ETL_DATABASE_DSN lacks a privilege the ETL needs (INSERT on user_logins,"
    " user_login_manifests and etl_quarantine, SELECT of user_logins.event_id, EXECUTE on"
    " public.user_logins_reused_event_ids)",
    "42P01": "a table the ETL needs is missing: run the migrations (python -m tokenvault_common.migrations)",
    "42703": "a column the ETL needs is missing: run the migrations (python -m tokenvault_common.migrations)",
    "42883": "a function the ETL needs is missing: run the migrations (python -m tokenvault_common.migrations)",
}


_TLS_REFUSALS = (
    (
        "server does not support SSL",
        "the server offers no TLS and the sslmode of ETL_DATABASE_DSN requires it (turn ssl on in the server; or,"
        " if it is meant to have none, set sslmode=prefer with require_auth=scram-sha-256)",
    ),
    (
        "connection requires a valid client certificate",
        "the server (pg_hba.conf clientcert, or cert) requires a"
        " client certificate and ETL_DATABASE_DSN sends none: its sslcert and sslkey, a certificate of the server's"
        " ssl_ca_file (a sslcert file that does not exist is not sent)",
    ),
    (
        "alert unknown ca",
        "the server does not trust the client certificate of ETL_DATABASE_DSN (its sslcert is not"
        " signed by a CA of the server's ssl_ca_file)",
    ),
    (
        "alert certificate revoked",
        "the server refused the client certificate of ETL_DATABASE_DSN as revoked (its sslcert: issue a new one)",
    ),
    (
        "alert certificate expired",
        "the server refused the client certificate of ETL_DATABASE_DSN as expired (its sslcert: renew it)",
    ),
    (
        "certificate authentication failed",
        "the client certificate of ETL_DATABASE_DSN does not name its role"
        " (pg_hba.conf cert: the sslcert's CN must be the role, or a pg_ident.conf map)",
    ),
    (
        "certificate validation (clientcert=verify-full) failed",
        "the client certificate of ETL_DATABASE_DSN does"
        " not name its role (pg_hba.conf clientcert=verify-full: the sslcert's CN must be the role)",
    ),
    (
        "certificate verify failed",
        "the server's certificate is not one the sslrootcert of ETL_DATABASE_DSN verifies (another CA, or expired)",
    ),
    (
        "does not match host name",
        "the server's certificate does not name the host of ETL_DATABASE_DSN"
        " (sslmode=verify-full: connect by a name the certificate holds)",
    ),
    ("root certificate file", "the sslrootcert file of ETL_DATABASE_DSN cannot be read"),
    ("certificate file", "the sslcert file of ETL_DATABASE_DSN cannot be used"),
    ("private key file", "the sslkey file of ETL_DATABASE_DSN cannot be used (it must match sslcert, mode 0600)"),
    ("could not load SSL engine", "the sslkey of ETL_DATABASE_DSN names an OpenSSL engine (a ':' in its path?)"),
    ("alert bad certificate", "the server refused the client certificate of ETL_DATABASE_DSN (sslcert, sslkey)"),
    ("alert certificate unknown", "the server refused the client certificate of ETL_DATABASE_DSN (sslcert, sslkey)"),
    ("alert unsupported certificate", "the server refused the client certificate of ETL_DATABASE_DSN (sslcert)"),
    ("alert certificate required", "the server requires a client certificate and ETL_DATABASE_DSN sends none"),
    ("alert access denied", "the server refused the client certificate of ETL_DATABASE_DSN (sslcert, sslkey)"),
    ("alert protocol version", "the server and ETL_DATABASE_DSN share no TLS version (ssl_min_protocol_version)"),
    ("unsupported protocol", "the server and ETL_DATABASE_DSN share no TLS version (ssl_min_protocol_version)"),
    ("invalid SSL protocol version range", "ETL_DATABASE_DSN's ssl_min/max_protocol_version allow no version"),
    (
        "authentication method requirement",
        "the server asks for an authentication method the require_auth of"
        " ETL_DATABASE_DSN refuses (pg_hba.conf's method for the role against require_auth)",
    ),
)
"""TLS refusals before a session, by libpq's or the server's text (no SQLSTATE): a client certificate the server
refuses (missing, another CA, revoked, expired, naming another role), a server certificate the DSN's CA does not
verify or that names another host, certificate files libpq cannot use, an sslmode the server does not offer. Each
was an outage for ever (review 49, R49-1's "Left"; etl50). Not here, so an outage still: "SSL SYSCALL error",
"unexpected eof", "server closed the connection unexpectedly" - a connection cut during the handshake."""
_STARTUP_REFUSALS = (
    (
        "password authentication failed",
        "28P01",
        REFUSED_STATES["28P01"] + " (or, under pg_hba.conf's clientcert=verify-full, the CN of its sslcert does not"
        " name the role)",
    ),
    ("is not permitted to log in", "28000", "the role of ETL_DATABASE_DSN may not log in (NOLOGIN)"),
    (
        "no encryption",
        "28000",
        "pg_hba.conf has no entry letting the role of ETL_DATABASE_DSN connect without TLS"
        " (the server requires TLS for it: set sslmode=verify-full, with sslrootcert the server's CA, in"
        " ETL_DATABASE_DSN)",
    ),
    (
        "SSL encryption",
        "28000",
        "pg_hba.conf has no entry letting the role of ETL_DATABASE_DSN connect over TLS"
        " (a hostssl entry, or the sslmode of ETL_DATABASE_DSN)",
    ),
    ("no pg_hba.conf entry", "28000", "pg_hba.conf has no entry letting the role of ETL_DATABASE_DSN connect"),
    ("pg_hba.conf rejects connection", "28000", "pg_hba.conf rejects the role of ETL_DATABASE_DSN"),
    ('role "', "28000", "the role of ETL_DATABASE_DSN does not exist"),
    ('database "', "3D000", REFUSED_STATES["3D000"]),
    ("permission denied for database", "42501", "the role of ETL_DATABASE_DSN lacks CONNECT on its database"),
)
"""The server's refusals of a login, by their text: libpq reports them before any session, so without a SQLSTATE
(psycopg 3.3). Each would otherwise be taken for the database down for ever (review 49, R49-1). `role "`/`database "`
count only with "does not exist"; "no encryption"/"SSL encryption" only in a pg_hba.conf refusal (etl50)."""


def startup_refusal(text: str) -> tuple[str, str] | None:
    """(SQLSTATE, what) of a login the server refused, recognised by its text; None for anything else."""
    for fragment, state, said in _STARTUP_REFUSALS:
        if fragment.endswith('"') and "does not exist" not in text:
            continue
        if fragment.endswith("encryption") and "no pg_hba.conf entry" not in text:
            continue
        if fragment in text:
            return state, said
    return None


_FILE_FRAGMENTS = ("certificate file", "private key file")
"""libpq's texts naming the sslcert, sslkey or sslrootcert file ("certificate does not match private key file",
"could not load private key file", "could not read root certificate file", ...): what a connection opened between
the two writes of a certificate renewal meets for a moment as well (review 50, R50-6)."""


def names_tls_file(text: str) -> bool:
    """Whether a connection's failure is libpq refusing the DSN's certificate or key *files* (maybe mid-renewal)."""
    return any(fragment in text for fragment in _FILE_FRAGMENTS)


def tls_refusal(text: str) -> str | None:
    """What of ETL_DATABASE_DSN's TLS settings a connection's failure names, with libpq's own words; else None."""
    for fragment, said in _TLS_REFUSALS:
        if fragment in text:
            reason = text.split(" failed: ", 1)[-1].strip().splitlines()[0][:200]
            return f"{said} (libpq: {reason})"
    return None
