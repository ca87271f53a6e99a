"""The lock watchdog's rule on the serving role's members (migration 0059; attack 32, F7): their sessions held together.

PostgreSQL 15 limits connections per login, not per group. In Kubernetes the vault logs in as Vault-made logins IN
ROLE tokenvault_vault, each with the CONNECTION LIMIT of Vault's creation statement, and whoever may read
`database/creds/tokenvault-vault` may mint more: 7 such logins held 96 sessions and the ETL's, an analyst's and the
watchdog's new logins were refused. At each look the watchdog counts the sessions of every member of
tokenvault_vault (not a superuser's nor the migrator's) and, past the budget - TOKENVAULT_WATCHDOG_VAULT_SESSIONS, or
by default tokenvault_vault's own CONNECTION LIMIT (0046's: what the server's slots leave once every other login's
limit is counted) - ends the excess: the most recently created login's sessions first, its idle ones first, never
one holding the audit chain's lock. The watchdog keeps its own warm connection, so it looks while the slots are full.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vault_service.adapters.postgres.lock_hogs import LockHogWatch
from vault_service.adapters.postgres.watchdog_rule import WatchdogRule

log = logging.getLogger(__name__)

VAULT_SESSIONS_RANGE = (0, 100_000)
"""TOKENVAULT_WATCHDOG_VAULT_SESSIONS' bounds; 0 (the default): tokenvault_vault's own CONNECTION LIMIT."""

_END_PAST_BUDGET = (
    "SELECT s.pid, s.login, s.idle, s.ended, s.sessions, s.held_to"
    " FROM watchdog.end_vault_sessions_past_budget(%(budget)s::pg_catalog.int4) s"
)


@dataclass(frozen=True)
class VaultSessionEnded:
    """A session of a member of tokenvault_vault ended past the group's budget (or that the server refused to end)."""

    pid: int
    login: str
    idle: bool
    """Not in a transaction when it was ended."""
    ended: bool


class VaultSessionWatch:
    """Migration 0059's watchdog.end_vault_sessions_past_budget() on the watchdog's warm connection, at each look.

    `budget`: the most sessions the members of tokenvault_vault may hold together; 0: tokenvault_vault's CONNECTION
    LIMIT. The server holds them to the greater of it and a floor (migration 0060; attack 32, F10: the watchdog's
    login, an insider too, passed 1 and ended every vault session but one): watchdog.rule_bounds' vault_sessions_floor
    (the owner's), or tokenvault_vault's CONNECTION LIMIT; a budget under it is said once. `sessions`: the members'
    sessions its last look counted; `held_to`: the budget it held them to (0: none - the role has no limit and the
    owner set no floor: nothing is ended, said once).
    """

    def __init__(self, login: LockHogWatch, budget: int = 0) -> None:
        self.budget = budget
        self.sessions = 0
        self.held_to = 0
        self._said_no_budget = False
        self._said_floor = False
        self._rule = WatchdogRule(
            login,
            _END_PAST_BUDGET,
            ("end_vault_sessions_past_budget",),
            "migration 0059 is not applied: the sessions of the logins IN ROLE tokenvault_vault together are"
            " not held to the group's budget by watchdog.end_vault_sessions_past_budget() (logins minted by"
            " Vault may take every slot of the server: docs/threat-model.md, attack 32)",
        )

    @property
    def missing(self) -> bool:
        """Migration 0059's function is not there: this rule is off (said once, looked for again every 30 s)."""
        return self._rule.missing

    def look(self) -> list[VaultSessionEnded]:
        """The rule once: each session it ended (or was refused); each logged."""
        rows = self._rule.rows({"budget": self.budget})
        if rows is None:
            return []
        found: list[VaultSessionEnded] = []
        for pid, login, idle, ended, sessions, held_to in rows:
            if pid is None:
                self.sessions = int(str(sessions or 0))
                self.held_to = int(str(held_to or 0))
                continue
            session = VaultSessionEnded(int(str(pid)), str(login), bool(idle), bool(ended))
            found.append(session)
            self._say(session)
        if not self.held_to and not self._said_no_budget:
            log.warning(
                "the sessions of the logins IN ROLE tokenvault_vault are not held to a budget: tokenvault_vault has no"
                " CONNECTION LIMIT (migration 0046 warned) and the owner set no vault_sessions_floor in"
                " watchdog.rule_bounds (migration 0060: TOKENVAULT_WATCHDOG_VAULT_SESSIONS alone is not trusted, the"
                " watchdog's login could pass 1) (docs/production.md, Scaling)",
                extra={"sessions": self.sessions},
            )
        self._said_no_budget = not self.held_to
        if self.budget and self.held_to > self.budget and not self._said_floor:
            log.warning(
                f"TOKENVAULT_WATCHDOG_VAULT_SESSIONS ({self.budget}) is under the database's floor ({self.held_to}:"
                " watchdog.rule_bounds' vault_sessions_floor, or tokenvault_vault's CONNECTION LIMIT; migration 0060):"
                f" the members' sessions are held to {self.held_to}. The setting may only raise the budget (README)",
                extra={"vault_sessions": self.budget, "in_force": self.held_to},
            )
            self._said_floor = True
        return found

    def _say(self, session: VaultSessionEnded) -> None:
        extra = {"pid": session.pid, "login": session.login, "idle": session.idle, "budget": self.held_to}
        if session.ended:
            log.error(
                f"ended a database session of a login IN ROLE tokenvault_vault: the members' sessions together were"
                f" past their budget of {self.held_to}, which leaves the other logins (the ETL, the analysts, this"
                " watchdog) their slots. More logins of the vault than its pods, or a login minted with the vault's"
                " Vault token: report it to the security team (docs/threat-model.md, attack 32)",
                extra=extra,
            )
        else:
            log.warning(
                "a database session of a login IN ROLE tokenvault_vault past the members' budget was to be ended and"
                " the server refused: the owner of watchdog.end_vault_sessions_past_budget() lacks pg_signal_backend"
                " (migration 0042). Look it up in pg_stat_activity",
                extra=extra,
            )
