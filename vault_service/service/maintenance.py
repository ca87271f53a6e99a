"""Background upkeep of a running vault: follows key rotations and watches its dependencies.

Every `interval` seconds it rewraps data keys when the KEK was rotated in Vault, picks up new
or retired data keys, clears the token cache after erasures, and reports whether Vault and
the database answer. An outage of Vault does not stop the service: it keeps using the keys
it holds; only keys it has never seen cannot be loaded until Vault is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from vault_service.domain.erase_commitment import EraseTally
from vault_service.domain.errors import CatalogCheckInterrupted, CatalogUnread, DatabaseUnavailable, VaultError
from vault_service.service.erase_commitment_check import EraseCommitmentCheck
from vault_service.service.erased_tokens import ErasedTokens
from vault_service.service.keyring import KeyManager
from vault_service.service.ports import CatalogAdditions, TokenStore
from vault_service.service.token_cache import TokenCache

log = logging.getLogger(__name__)

VAULT = "vault"
DATABASE = "database"
HealthReport = Callable[[str, bool], None]
"""Called with (dependency, healthy) after every check."""

START_CHECK_PAUSES = (1.0, 3.0)
"""Seconds a starting replica waits before checking the catalog again when every try of a check was cancelled or
timed out (attack 48, A48-1: CatalogCheckInterrupted, itself ~1 s of tries); then it does not start
(CatalogUnchecked)."""


VERIFY_WITH_THE_VAULT_DOWN = (
    "`tokenvault audit verify` needs a running vault: with it down, run `python -m vault_service.admin audit-verify`"
    " with the service's settings (embedded stack: `make admin ARGS=audit-verify`) and keep its output"
)
"""How a start refusal's reader verifies the audit log, the vault being the one that refused (walk 47, W47-3)."""


_catalog_findings = 0
"""How many findings the last catalog check of this process made (0: none, or not checked yet)."""


def catalog_findings() -> int:
    """How many findings the last catalog check named: the owner's objects, or 1 for a catalog it could not read.

    Exported as `tokenvault_database_catalog_findings` (alert VaultCatalogAltered; walk 47, W47-23): the replica
    answers NOT_SERVING meanwhile, which said only "database unavailable" - an outage's alert, for no outage.
    """
    return _catalog_findings


def _found_in_catalog(findings: tuple[str, ...]) -> None:
    global _catalog_findings
    _catalog_findings = len(findings)


class ErasedTokensUnread(Exception):
    """The audit log's erase rows could not be read at start: the replica must not serve (attack 44, A44-1)."""

    def __init__(self) -> None:
        super().__init__(
            "cannot read the audit log's erase rows, the erased tokens this replica must never serve; a row-level"
            " security policy on vault.audit_log (none is shipped) makes this read fail: report it to the security"
            f" team. {VERIFY_WITH_THE_VAULT_DOWN}"
        )


class CatalogAltered(ErasedTokensUnread):
    """The database's catalog holds the owner's additions: the replica must not serve (attack 45, A45-3/A45-4).

    Objects the vault's SQL would resolve to that neither PostgreSQL nor the migrations made, a table
    inheriting from a vault table, or row-level security, a policy or a rule on one (attack 46, A46-2).
    """

    def __init__(self, additions: tuple[str, ...]) -> None:
        Exception.__init__(
            self,
            f"the database's catalog was altered: {'; '.join(additions)}. The erased-token set's read and every"
            " vault query could return what the database owner chose (an erased token handed out again); the"
            f" vault does not serve on it: report it to the security team. {VERIFY_WITH_THE_VAULT_DOWN}",
        )
        self.additions = additions


class CatalogUnreadable(CatalogAltered):
    """The live database answered the catalog check with an error: the replica must not serve (review 40, R40-2).

    A check that cannot read the catalog cannot vouch for it (an overload standing behind a revoked catalog read).
    """

    def __init__(self, error: CatalogUnread) -> None:
        Exception.__init__(
            self, f"{error}; the vault does not serve on a catalog it cannot check. {VERIFY_WITH_THE_VAULT_DOWN}"
        )
        self.additions = (str(error),)


class CatalogUnchecked(ErasedTokensUnread):
    """The database was unavailable for the catalog check at start: no finding, but no start on an unchecked catalog.

    An outage (a connection lost, none to be had, the check's query cancelled or timed out on every try: A48-1):
    retried by the replica's next start.
    """

    def __init__(self, error: Exception) -> None:
        said = str(error) if isinstance(error, VaultError) else type(error).__name__
        Exception.__init__(self, f"cannot check the database's catalog before serving: {said}")


class EraseRowsUncommitted(ErasedTokensUnread):
    """The erase rows read at start are not those the newest signed checkpoint commits to (attack 46, A46-1/A46-3).

    The erased-token set would be the database owner's choice. (A checkpoint whose signature does not hold is passed
    over for the newest genuine one, not refused: the vault's own role can plant one - review 47, R47-6.)
    """

    def __init__(self, problem: str) -> None:
        Exception.__init__(
            self,
            f"{problem}. The erased-token set read now would be the database owner's choice (an erased token handed"
            " out, or a live one refused); the vault does not serve on it: report it to the security team."
            f" {VERIFY_WITH_THE_VAULT_DOWN}",
        )


class EraseRowsUnchecked(ErasedTokensUnread):
    """The database was unavailable for the erase-row commitment check at start: an outage, no finding (R47-11).

    A connection lost or none to be had, or the check's query cancelled (57014: any session of the vault's own role
    may cancel it) or out of lock time (55P03) on every try: no start on erase rows left unchecked, retried by the
    replica's next start. Never the tampering wording of EraseRowsUncommitted.
    """

    def __init__(self, error: Exception) -> None:
        said = str(error) if isinstance(error, VaultError) else type(error).__name__
        Exception.__init__(
            self, f"cannot check the erase rows against the signed audit checkpoints before serving: {said}"
        )


class KeyMaintainer:
    """Runs `check()` periodically on a daemon thread until `stop()`."""

    def __init__(
        self,
        keys: KeyManager,
        tokens: TokenStore,
        cache: TokenCache,
        report: HealthReport,
        interval: float,
        erased: ErasedTokens | None = None,
        catalog: CatalogAdditions | None = None,
        commitments: EraseCommitmentCheck | None = None,
    ) -> None:
        """`commitments`: the erase rows' check against the signed checkpoints, at start and each round (A46-3)."""
        self._keys = keys
        self._commitments = commitments
        self._tokens = tokens
        self._cache = cache
        self._erased = erased
        self._catalog = catalog
        self._altered: tuple[str, ...] = ()
        """What the last catalog check found (logged when it changes); a catalog it could not read is one finding."""
        self._report = report
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="key-maintainer", daemon=True)
        self._last_erasure: object = None
        self.healthy: dict[str, bool] = {VAULT: True, DATABASE: True}
        self._causes: dict[str, str] = {}
        """What the last failed check of each dependency met (its log line says it)."""
        self._mismatched = False
        """A round found the erase rows not as signed: each round rebuilds the set until a rebuild read matches the
        signed commitment (R47-1, A49-1)."""

    def start(self) -> None:
        """Remember the current erasure mark, learn the erased tokens from the audit log, and start the thread.

        ErasedTokensUnread when the audit log's erase rows cannot be read: a replica serving without them would
        hand out and reveal an erased token whose row the database owner wrote back (attack 44, A44-1: a
        row-level security policy hiding them from that read alone, which the read turns into this refusal).
        """
        try:  # before the erase rows are read: an overload there is what steered that read (A45-3)
            altered = self._catalog_altered_at_start()
        except CatalogUnread as error:  # the live database refused the check: itself a finding (R40-2)
            raise CatalogUnreadable(error) from None
        except Exception as error:  # the database down: an outage, but no start on a catalog left unchecked
            raise CatalogUnchecked(error) from None
        if altered:
            raise CatalogAltered(altered)
        try:
            self._last_erasure = self._tokens.last_erasure()
        except Exception:
            self._last_erasure = None
        tally = self._start_tally()
        if self._learn_erased(tally) is None:
            raise ErasedTokensUnread()
        if self._commitments is not None:
            problem = self._commitments.started(tally)
            if problem is not None:
                log.error("%s", problem)
                raise EraseRowsUncommitted(problem)
            if tally is not None and tally.upto and self._erased is not None:  # the read's failing rows are signed
                self._erased.vouch_read(tally.upto)
        self._thread.start()

    def _start_tally(self) -> EraseTally | None:
        """The tally the start-up read feeds, for the newest signed erase-row commitment (None: none to check).

        EraseRowsUnchecked when the database is unavailable for it (a query cancelled or timed out included) after
        each of START_CHECK_PAUSES (review 47, R47-11: an outage, not a finding); EraseRowsUncommitted when it fails
        otherwise (A46-3).
        """
        if self._commitments is None:
            return None
        for pause in (*START_CHECK_PAUSES, None):
            try:
                tally, problem = self._commitments.for_start()
                break
            except DatabaseUnavailable as error:  # an outage or a sibling's cancel: checked again, then no start
                if pause is None:
                    raise EraseRowsUnchecked(error) from None
                log.warning("the erase-row commitment check could not complete at start; checking again: %s", error)
                time.sleep(pause)
            except Exception as error:  # no start on erase rows left unchecked
                said = str(error) if isinstance(error, VaultError) else type(error).__name__
                raise EraseRowsUncommitted(
                    f"cannot check the erase rows against the signed audit checkpoints: {said}"
                ) from None
        if problem is not None:
            log.error("%s", problem)
            raise EraseRowsUncommitted(problem)
        return tally

    def _learn_erased(self, tally: EraseTally | None = None) -> bool | None:
        """Read the erase rows written since the last read into the erased-token set (attack 43); True if any were new.

        Each round, not only when `vault.erasure_count` moves: that count is the owner's to freeze, the erase
        rows are in the signed chain. None when the read failed: retried the next round (the set keeps what it
        has), the database reported unavailable meanwhile (attack 44, A44-1).
        """
        if self._erased is None:
            return False
        try:
            return self._erased.learn(self._tokens, tally) > 0
        except Exception as error:
            log.warning("cannot read the audit log's erase rows: %s", type(error).__name__)
            return None

    def _catalog_altered_at_start(self) -> tuple[str, ...]:
        """`_catalog_altered`, checked again after each of START_CHECK_PAUSES while its query is cancelled (A48-1).

        A session of the vault's own role may cancel the check: an outage of that check, not a finding; if it lasts
        the last CatalogCheckInterrupted is raised (the caller refuses to start on an unchecked catalog).
        """
        for pause in START_CHECK_PAUSES:
            try:
                return self._catalog_altered()
            except CatalogCheckInterrupted as error:
                log.warning("the catalog check could not complete at start; checking again: %s", error)
                time.sleep(pause)
        return self._catalog_altered()

    def _catalog_altered(self) -> tuple[str, ...]:
        """What the owner added to pg_catalog, made inherit from a vault table (A45-3) or filter one (A46-2).

        CatalogUnread, logged at ERROR, when the live database answers the check with an error: a check that cannot
        read the catalog vouches for nothing (review 40, R40-2: an owner's revoked catalog read hid an overload).
        Any other error (the database down) is raised as it is: the caller reports it as an outage.
        """
        if self._catalog is None:
            return ()
        try:
            altered = self._catalog.catalog_additions()
        except CatalogUnread as error:
            if self._altered != (str(error),):
                log.error("%s", error)
            self._altered = (str(error),)
            _found_in_catalog(self._altered)
            raise
        if altered != self._altered and altered:
            log.error(
                "the database's catalog was altered: the vault's SQL may resolve to the owner's objects;"
                " report it to the security team and run audit verify",
                extra={"findings": "; ".join(altered)},
            )
        self._altered = altered
        _found_in_catalog(altered)
        return altered

    def stop(self) -> None:
        """Stop the thread (returns when it has finished its current check)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._interval + 10)

    def _loop(self) -> None:
        while not self._stopping.wait(self._interval):
            self.check()

    def check(self) -> None:
        """One round: database first (key rows live there), then Vault."""
        database_ok = self._check_database()
        vault_ok = self._check_vault() if database_ok else self.healthy[VAULT]
        for dependency, ok in ((DATABASE, database_ok), (VAULT, vault_ok)):
            if ok != self.healthy[dependency]:
                level = logging.INFO if ok else logging.WARNING
                fields = (
                    {"dependency": dependency}
                    if ok
                    else {"dependency": dependency, "cause": self._causes.get(dependency, "")}
                )
                log.log(level, "dependency %s", "recovered" if ok else "unavailable", extra=fields)
            self.healthy[dependency] = ok
            self._report(dependency, ok)

    def _check_database(self) -> bool:
        try:
            mark = self._tokens.last_erasure()
        except Exception as error:
            log.debug("database check failed: %s", type(error).__name__)
            return False
        try:
            altered = self._catalog_altered()
        except CatalogUnread:  # unhealthy while it lasts: a check that cannot read the catalog vouches for nothing
            self._causes[DATABASE] = "cannot read the catalog to check it (logged at ERROR)"
            return False
        except CatalogCheckInterrupted as error:  # cancelled or timed out on every try: an outage, no finding (A48-1)
            self._causes[DATABASE] = str(error)
            return False
        except Exception as error:  # the database went down since the mark was read: an outage
            log.debug("catalog check failed: %s", type(error).__name__)
            self._causes[DATABASE] = f"cannot check the catalog: {type(error).__name__}"
            return False
        if altered:  # unhealthy while it lasts: any read of this round may be the owner's choice
            self._causes[DATABASE] = (
                "the database's catalog was altered (objects added to pg_catalog, inheritance, row-level security,"
                " policies or rules on vault tables)"
            )
            return False
        if self._mismatched:  # after the mark, as the read below; unhealthy until the rebuild matches (A49-1)
            rebuild_problem = self._rebuilt()
            if rebuild_problem is not None:
                self._causes[DATABASE] = rebuild_problem
                return False
            learned: bool | None = True
        else:
            learned = self._learn_erased()  # after the mark: an erasure that moved it has its row committed
        if learned is None:  # unhealthy until it reads them: another replica's erasure would go unknown here
            self._causes[DATABASE] = "cannot read the audit log's erase rows (a row-level security policy?)"
            return False
        if mark != self._last_erasure or learned:
            self._cache.clear()  # a value was erased somewhere: cached tokens may point at nothing
            self._last_erasure = mark
        uncommitted = self._uncommitted()
        if uncommitted is not None:  # unhealthy while it lasts: the set may be the owner's choice (A46-3)
            self._causes[DATABASE] = uncommitted
            return False
        changed = [] if self._erased is None else self._erased.changed()
        if changed:  # unhealthy while it lasts: a failing erase row read again is not the row it was (A50-3)
            self._causes[DATABASE] = (
                "erase row(s) that did not hold are read again as other rows than when they failed (logged at ERROR;"
                f" not learned): records {', '.join(str(i) for i in changed[:20])}"
            )
            return False
        return True

    def _rebuilt(self) -> str | None:
        """Re-read every erase row and rebuild the erased-token set, checked against the signed commitment.

        Returns why the replica must stay unhealthy (None: rebuilt from a read that matches it).

        Review 47, R47-1: after a mismatch the set may hold what the owner chose (a reveal row relabelled `erase`) or
        miss an erase row its learn window moved past. Attack 49, A49-1: that read is the owner's to shape too (an
        old committed erase row hidden for its length made the replica forget the erasure for its life), so it is
        counted from the log's start up to the newest signed checkpoint and applied only when it matches; otherwise
        the set keeps what it knew and the next round reads again.
        """
        if self._erased is None or self._commitments is None:
            self._mismatched = False
            return None
        try:
            verified = self._commitments.verified_head  # before the rebuild: a match moves it
            tally = self._commitments.for_rebuild()
            problem = self._erased.rebuild(self._tokens, tally, self._commitments.rebuilt, verified)
        except Exception as error:  # an outage: rebuilt again next round, unhealthy meanwhile
            log.warning("cannot read the audit log's erase rows again from its start: %s", type(error).__name__)
            return "cannot read the audit log's erase rows (a row-level security policy?)"
        finally:
            self._cache.clear()
        if problem is not None:
            return (
                "the erase rows read again from the log's start are not those the signed checkpoints commit to (logged"
                f" at ERROR; the erased-token set is kept as it was): {problem}"
            )
        self._mismatched = False
        return None

    def _uncommitted(self) -> str | None:
        """Why the erase rows up to a newer signed checkpoint are not those it commits to (None: they are, or none)."""
        if self._commitments is None:
            return None
        try:
            problem = self._commitments.problem(self._tokens, self._erased)
        except Exception as error:  # an outage: unhealthy while it lasts, said at WARNING once per cause (R47-11)
            cause = f"cannot check the erase rows against the signed checkpoints: {type(error).__name__}"
            if self._causes.get(DATABASE) != cause:
                log.warning("%s", cause)
            return cause
        if problem is None:
            return None
        # The set may hold what the owner chose, or miss an erase row its learn window has since moved past: the
        # next rounds re-read every erase row from the log's start and rebuild it from a read that matches the
        # signed commitment (review 47, R47-1; attack 49, A49-1).
        self._mismatched = True
        return f"the erase rows are not those the signed checkpoints commit to (logged at ERROR): {problem}"

    def _check_vault(self) -> bool:
        try:
            self._keys.rewrap_outdated()
            self._keys.refresh()
        except Exception as error:
            # Vault down and Vault refusing (a KEK version made too old before the rewrap, a policy)
            # both stop the upkeep; the cause tells them apart (attack 24): a VaultError's message
            # names no value, anything else is named by its type only.
            self._causes[VAULT] = str(error) if isinstance(error, VaultError) else type(error).__name__
            log.debug("vault check failed: %s", error)
            return False
        return True
