"""Domain errors; the gRPC edge maps each to one status code (see entrypoints/status.py)."""


class VaultError(Exception):
    """Base of every error the vault reports to a caller. Messages never contain values."""

    stored_nothing = False
    """Set on an error a Tokenize ends with when the vault knows that call stored no value and issued no token
    (service/tokenizing.py): every transaction of it that inserts tokens failed before its COMMIT, or was refused by
    the database (an ERROR: rolled back), or none was begun. The servicer says so to the caller in the trailer
    NOTHING_STORED_KEY (entrypoints/servicer.py): the ETL then knows a lost call of it left nothing behind (attack 41,
    A41-4). False - the default, and what any other error says - claims nothing."""

    erased_nothing = False
    """Set on an error the token store's erase ends with when its transaction ended before its COMMIT or the
    database refused a statement of it (an ERROR: rolled back): nothing was erased, and the vault gives the
    erasure's budget back (chaos 50, V50-4). Kept apart from `stored_nothing`: that one makes the servicer ask the
    caller's gRPC not to retry (a Tokenize's answer must say what it left), where an erasure refused for a held row
    is one gRPC's retry policy should retry - and the retry now finds its budget."""


class InvalidValue(VaultError):
    """A value cannot be tokenized (wrong shape for its type, empty, too long)."""


class InvalidRequest(VaultError):
    """The request as a whole is malformed (e.g. a missing purpose)."""


class RequestNotSent(InvalidRequest):
    """The call did not deliver its request message within the server's read bound; it was ended."""


class TokenNotFound(VaultError):
    """No value is stored behind this token (never issued, malformed, or erased)."""


class Unauthenticated(VaultError):
    """The caller presented no usable client identity.

    `serial` (hex) and `cert_sha256` name the certificate refused, as far as it could be read
    (empty without one), so the refusal is audited with what is known of it. `name`: the client
    name of a certificate the client CA issued directly with one well-formed CN, refused for its
    validity window or its revocation (empty otherwise); refusals are throttled by it (attack 45, A45-5).
    """

    def __init__(self, message: str, serial: str = "", cert_sha256: str = "", name: str = "") -> None:
        super().__init__(message)
        self.serial = serial
        self.cert_sha256 = cert_sha256
        self.name = name


class PermissionDenied(VaultError):
    """The caller is known but its policy does not allow this action on this type."""


class KeysUnavailable(VaultError):
    """A key needed for this item is not loaded (Vault unreachable at start, or retired)."""


class KekVersionsInUse(InvalidRequest):
    """Old KEK versions may not be retired now: a data key still needs one, or the version asked for is wrong.

    Nothing was changed in Transit; the message names the keys and the remedy (`rewrap`).
    """


class RotationUnderWay(InvalidRequest):
    """A key rotation of this purpose is under way already (a fingerprint key is pending): finish it first."""


class StoredValueAltered(VaultError):
    """A stored ciphertext does not authenticate for its token with its loaded key.

    It was altered in the database (e.g. swapped with another token's): retrying cannot help.
    """


class ErasedValuePresent(StoredValueAltered):
    """The row of an erased token (`erased_at` set) holds a value again: the erasure was undone in the database.

    Only the database owner can write it back (attack 41, A41-2); the value is never revealed nor its token
    handed out again. DATA_LOSS, as any altered row: retrying cannot help, the security team is told.
    """


class NextFingerprintsAltered(VaultError):
    """Next fingerprints under the pending key that the re-index did not write (review 23, R23-1).

    The re-index cleared them and did not promote the key: run it again, it recomputes them.
    """


class KeptCopiesDiffer(VaultError):
    """Values re-sealed away from a data key no longer hold the copy kept under it (review 25, R25-1).

    The key was not retired, so the kept copies still open: the database owner puts them back.
    """


class AuditUnavailable(VaultError):
    """The audit record could not be written, so the action it records was refused."""


class RateLimited(VaultError):
    """The caller exceeded its Detokenize rate; it may retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DatabaseUnavailable(VaultError):
    """The vault's database cannot be reached or dropped the connection; retry later."""


class DatabaseUnreachable(DatabaseUnavailable):
    """No connection to the vault's database could be had (refused, or none within the pool's timeout).

    An outage, told apart from a query the database answered with an error or a connection it
    dropped mid-statement (which the database owner can cause for one statement of one session).
    """


class StorageError(VaultError):
    """The database refused an operation the vault expected to succeed (a bug or a broken schema)."""


class TooManyRequests(RateLimited):
    """A peer sent too many refused calls; it may retry after `retry_after` seconds."""


class TooManyCallsAtOnce(RateLimited):
    """The client already has its share of the server's calls in progress; it may retry when one finishes."""


class AuditDatabaseUnreachable(AuditUnavailable, DatabaseUnreachable):
    """An audit append refused because no connection to the vault's database could be had (an outage)."""


class KeyJobRunning(VaultError):
    """A key job is running on this vault process already: one at a time (the message names it)."""


class KeyJobStopped(VaultError):
    """A key job stopped before its end (its caller went away, or the service is stopping); run it again to resume."""


class AuditReportRunning(VaultError):
    """An audit report is being made on this vault process already: one at a time (the message names it)."""


class AuditReportTooLong(VaultError):
    """An audit report did not end within its call's deadline (at most the vault's own bound); nothing was answered."""


class AuditReportTooLarge(VaultError):
    """The audit log has more rows than a report of the serving vault may verify in its time.

    The bound is TOKENVAULT_AUDIT_REPORT_MAX_ROWS. Such a report is made by the service account's command
    instead (the message says how).
    """


class AuditCopyRefused(VaultError):
    """The vault's exported checkpoint copy cannot be verified against (no checkpoint, unreadable lines)."""


class AuditReportFailed(VaultError):
    """An audit report failed on an error no other refusal names (INTERNAL): refused on the record, never UNKNOWN."""


class CatalogCheckInterrupted(DatabaseUnavailable):
    """The catalog check's query was cancelled or timed out on every try: an outage, not a finding (attack 48, A48-1).

    SQLSTATE 57014 (query_canceled: `pg_cancel_backend`, or a statement timeout) or 55P03 (lock_not_available: a
    lock timeout). Any session of the vault's own database role may cancel the queries of every other session of
    that role, so such an error says nothing about the catalog: the replica reports its database unavailable (a
    starting one does not start, saying the check could not run), `audit verify` says the check could not complete.
    The message names the SQLSTATE and the server's primary message (a fixed text, no row data).
    """


class CatalogUnread(StorageError):
    """The live database answered the check of its catalog with an error (review 40, R40-2).

    The check of what the database owner added to pg_catalog, of inheritance and filters on vault tables (attack 45,
    attack 46) cannot vouch for a catalog it cannot read: an owner who takes SELECT on `pg_catalog.pg_cast` from
    PUBLIC (some hardening guides revoke catalog reads) switched it off while an overload stood. So the error is
    itself a finding: the replica does not start, a running one reports its database unhealthy, `audit verify` names
    it. The message quotes the server's primary message (a catalog read names objects, never row data). A database
    down or a connection lost is DatabaseUnavailable instead: an outage, not a finding.
    """
