"""VaultSession's renewal decisions with a fake clock and a fake token API (the real thing
against OpenBao: tests/integration/test_vault_login.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import hvac.exceptions

from vault_service.adapters.vault_session import VaultSession


@dataclass
class FakeVault:
    """Tokens with a TTL and a max TTL, as Vault grants them; counts logins and renewals."""

    ttl: float
    max_ttl: float
    now: float = 0.0
    logins: int = 0
    renewals: int = 0
    issued_at: float = 0.0
    refuse_renewal: bool = False
    revoked: bool = False
    revoke_new_tokens: bool = False
    lookups: int = 0
    expires_at: float = 0.0
    login_times: list[float] = field(default_factory=list)
    auth: Any = field(init=False)

    def __post_init__(self) -> None:
        vault = self

        class Token:
            def lookup_self(self) -> dict[str, Any]:
                vault.lookups += 1
                if vault.revoked:
                    raise hvac.exceptions.Forbidden("permission denied")
                return {"data": {"ttl": vault.expires_at - vault.now}}

            def renew_self(self) -> dict[str, Any]:
                if vault.refuse_renewal:
                    raise hvac.exceptions.Forbidden("permission denied")
                vault.renewals += 1
                granted = min(vault.ttl, vault.issued_at + vault.max_ttl - vault.now)
                vault.expires_at = vault.now + granted
                return {"auth": {"lease_duration": granted}}

        class Auth:
            token = Token()

        self.auth = Auth()

    def login(self, client: Any) -> dict[str, Any]:
        self.revoked = self.revoke_new_tokens  # a new token (refused at once too, when so set)
        self.logins += 1
        self.issued_at = self.now
        self.expires_at = self.now + self.ttl if self.ttl else float("inf")
        self.login_times.append(self.now)
        return {"lease_duration": self.ttl, "renewable": True}


def run(vault: FakeVault, seconds: float, step: float = 1.0) -> None:
    session = VaultSession.logged_in(vault, vault.login, clock=lambda: vault.now)
    while vault.now < seconds:
        session.client()
        assert vault.now < vault.expires_at, f"used an expired token at {vault.now} s"
        vault.now += step


def test_a_token_is_renewed_until_its_max_ttl_then_replaced_by_one_login() -> None:
    vault = FakeVault(ttl=60, max_ttl=600)
    run(vault, 1200)
    assert vault.login_times == [0, 587, 1174]  # at start, then once each max TTL (less a last short renewal)
    assert vault.renewals == 2 * 15  # per token: 14 at 2/3 of its TTL, then one that buys too little


def test_without_renewal_every_token_would_cost_a_login() -> None:
    vault = FakeVault(ttl=60, max_ttl=600, refuse_renewal=True)
    run(vault, 600)
    assert vault.logins >= 600 // 60  # a refused renewal falls back to a login, in time


def test_a_non_expiring_token_is_never_touched() -> None:
    vault = FakeVault(ttl=0, max_ttl=0)
    run(vault, 10_000, step=100)
    assert (vault.logins, vault.renewals) == (1, 0)


def test_a_token_vault_refuses_before_its_time_is_replaced_at_once_and_a_policy_refusal_spends_no_login() -> None:
    """Chaos 50, V50-3: a revoked token was kept until its renewal was due (2/3 of its TTL), every call refused."""
    vault = FakeVault(ttl=3600, max_ttl=86400)
    session = VaultSession.logged_in(vault, vault.login, clock=lambda: vault.now)
    vault.now = 10
    session.refused()  # a 403 for a capability the policy lacks: the token is still valid
    assert (vault.lookups, vault.logins) == (1, 1)
    vault.now, vault.revoked = 20, True
    session.refused()  # the token itself refused: a new login now, not at 2400 s
    assert (vault.lookups, vault.logins) == (2, 2)
    session.refused()  # more 403s of calls in flight with the old token: no second look within RETRY_SECONDS
    assert (vault.lookups, vault.logins) == (2, 2)
    vault.now = 30
    session.refused()
    assert (vault.lookups, vault.logins) == (3, 2)  # looked again: the new token is valid


def test_new_tokens_refused_again_and_again_spend_few_secret_id_uses() -> None:
    """Review 50: each refused token had the session log in again every 5 s - a secret id use each (100 in 8 min)."""
    vault = FakeVault(ttl=3600, max_ttl=86400)
    session = VaultSession.logged_in(vault, vault.login, clock=lambda: vault.now)
    vault.revoked = vault.revoke_new_tokens = True  # e.g. token_bound_cidrs the service's address no longer matches
    while vault.now < 600:
        vault.now += 1
        session.refused()  # a Transit 403 every second
    assert vault.logins <= 8, vault.logins  # at 1, 11, 31, 71, 151, 311 s after the start (and the start's)
    assert vault.lookups >= 100  # still looked every 5 s: a token that holds again is seen at once
    vault.revoke_new_tokens = False  # fixed: the next login's token holds
    vault.now += 600
    session.refused()
    assert not vault.revoked
    vault.now += 5
    session.refused()  # found valid: the wait starts over
    vault.revoked = True  # revoked once more, later: a login at once again
    vault.now += 5
    logins = vault.logins
    session.refused()
    assert vault.logins == logins + 1
