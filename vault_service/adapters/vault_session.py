"""A Vault login that stays valid: renewed before it expires, replaced by a new login after.

When the token can no longer be renewed (its `token_max_ttl` is reached, or it was revoked)
the service logs in again with its AppRole.

Why this shape: the AppRole secret id has a TTL and a use limit, and every login uses one. So
the service logs in once at start, then *renews* its token (no secret id needed) until the
token's max TTL, and only then logs in again - one use per `token_max_ttl`. The secret id is
read from its file at every login, so an operator (or Vault Agent) can replace an expiring
secret id without restarting the service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import hvac
import hvac.exceptions
import requests

log = logging.getLogger(__name__)

RENEW_AT = 2 / 3
"""Renew when this share of the token's TTL has passed."""
RETRY_SECONDS = 5.0
"""After a failed renewal and login, try again at most this often."""
MAX_REFUSAL_LOGIN_SECONDS = 600.0
"""The longest wait between two logins made because Vault refused the token before its time (`refused`)."""

Login = Callable[[hvac.Client], dict[str, Any]]
"""Logs `client` in (setting its token) and returns the login's `auth` block."""


class VaultSession:
    """An hvac client whose token is kept valid; use `client()` for every call.

    Thread-safe: one thread refreshes while the others keep using the current token.
    """

    def __init__(self, client: hvac.Client, login: Login | None, clock: Callable[[], float] = time.monotonic) -> None:
        """`login` None: a fixed token (renewed while Vault allows, never replaced)."""
        self._client = client
        self._login = login
        self._clock = clock
        self._lock = threading.Lock()
        self._ttl = 0.0
        self._renew_at = float("inf")
        self._renewable = False
        self._refusal_checked_at = float("-inf")
        self._refusal_logins = 0  # logins in a row whose token Vault refused again (`refused`)
        self._next_refusal_login = float("-inf")

    @classmethod
    def logged_in(cls, client: hvac.Client, login: Login, clock: Callable[[], float] = time.monotonic) -> VaultSession:
        """Log in now (raises hvac/requests errors) and keep the login valid from then on."""
        session = cls(client, login, clock)
        session._start(login(client))
        return session

    @classmethod
    def for_token(cls, client: hvac.Client, clock: Callable[[], float] = time.monotonic) -> VaultSession:
        """A session on the client's current token, renewed if the token is renewable."""
        session = cls(client, None, clock)
        data = client.auth.token.lookup_self()["data"]
        session._start({"lease_duration": data.get("ttl") or 0, "renewable": bool(data.get("renewable"))})
        return session

    @classmethod
    def fixed(cls, client: hvac.Client) -> VaultSession:
        """A session that never renews (a client someone else keeps valid)."""
        return cls(client, None)

    def client(self) -> hvac.Client:
        """The client, its token renewed or replaced first if due."""
        if self._clock() >= self._renew_at:
            with self._lock:
                if self._clock() >= self._renew_at:
                    self._refresh()
        return self._client

    def refused(self) -> None:
        """Vault answered a call 403: if the token itself is no longer valid, log in again now (chaos 50, V50-3).

        A token revoked before its time (an incident response revoking the AppRole's logins, a restore of
        Vault from a snapshot older than the login) was kept until its renewal was due - 2/3 of a 1 h TTL - so
        every Transit call failed meanwhile: checkpoints unsigned, reveals refused after the audit bound,
        new data keys unloadable. The token is looked up (`lookup_self`, which any valid token may): still
        valid, the refusal is a capability the policy lacks, and nothing changes (no secret id use spent);
        refused too, the service logs in again. At most once per RETRY_SECONDS, whatever the callers.

        A token refused again right after such a login (token_bound_cidrs the service's address no longer
        matches, a script revoking the role's logins in a loop) would have cost a secret id use every
        RETRY_SECONDS - the 100 uses production.md gives it in 8 minutes, a token and lease each: the wait
        between such logins doubles, up to MAX_REFUSAL_LOGIN_SECONDS, until a token is found valid (review 50).
        """
        with self._lock:
            now = self._clock()
            if now < self._refusal_checked_at + RETRY_SECONDS:
                return
            self._refusal_checked_at = now
            try:
                self._client.auth.token.lookup_self()
                self._refusal_logins, self._next_refusal_login = 0, float("-inf")
                return  # the token is valid: the policy refused the call
            except hvac.exceptions.Forbidden:
                pass
            except (hvac.exceptions.VaultError, requests.RequestException):
                return  # Vault away or failing: the schedule stands
            if self._login is None:
                log.error("Vault refuses the service's fixed token (revoked or expired): give the service a new one")
                return
            if now < self._next_refusal_login:
                return
            if self._refusal_logins:
                log.error(
                    "Vault refuses the service's token again, %d login(s) in a row (token_bound_cidrs? the role's"
                    " logins revoked in a loop?): logging in again, then at most every %.0f s until one holds",
                    self._refusal_logins,
                    min(RETRY_SECONDS * 2 ** (self._refusal_logins + 1), MAX_REFUSAL_LOGIN_SECONDS),
                )
            else:
                log.warning("Vault refuses the service's token before its time (revoked?): logging in again")
            self._relogin()
            self._refusal_logins += 1
            self._next_refusal_login = now + min(RETRY_SECONDS * 2**self._refusal_logins, MAX_REFUSAL_LOGIN_SECONDS)

    @property
    def seconds_left(self) -> float:
        """Seconds until the current token should be refreshed (inf for a non-expiring one)."""
        return self._renew_at - self._clock()

    def _start(self, auth: dict[str, Any]) -> None:
        self._ttl = float(auth.get("lease_duration") or 0)
        self._renewable = bool(auth.get("renewable"))
        self._schedule(self._ttl)

    def _schedule(self, ttl: float) -> None:
        self._renew_at = self._clock() + ttl * RENEW_AT if ttl > 0 else float("inf")

    def _refresh(self) -> None:
        granted = self._renew() if self._renewable else None
        if granted is not None and (granted >= self._ttl / 2 or self._login is None):
            self._schedule(granted)
            log.debug("vault token renewed for %d s", granted)
            return
        if self._login is None:
            self._renew_at = self._clock() + RETRY_SECONDS
            return
        self._relogin()

    def _renew(self) -> float | None:
        try:
            auth = self._client.auth.token.renew_self()["auth"]
        except (hvac.exceptions.VaultError, requests.RequestException) as error:
            log.warning("vault token renewal failed (%s)", type(error).__name__)
            return None
        return float(auth.get("lease_duration") or 0)

    def _relogin(self) -> None:
        login = self._login
        assert login is not None
        try:
            auth = login(self._client)
        except (hvac.exceptions.VaultError, requests.RequestException, OSError) as error:
            log.error(
                "vault login failed (%s): the AppRole secret id may have expired or run out of uses;"
                " put a new one in the secret id file",
                type(error).__name__,
            )
            self._renew_at = self._clock() + RETRY_SECONDS
            return
        self._start(auth)
        # The replaced token is not revoked: calls in flight may still carry it, and it
        # expires by itself within half a TTL.
        log.info("logged in to Vault again (token valid %d s)", self._ttl)
