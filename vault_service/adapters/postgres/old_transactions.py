"""The lock watchdog's rule on old transactions (migration 0057; attack 32, F2): analysts' and the ETL's ended.

A transaction held open by any login - idle in psql, or one long statement - keeps the database's xmin horizon, so
every version of the vault's metering rows (vault.call_budget: one UPDATE of the client's row per lease, or per
refused call) written since is kept, and each next metering statement walks them all under the row's lock: +34 ns
per kept version, without bound (0.34 ms -> 2.56 ms per statement after 64,000 calls, measured). The watchdog ends
the sessions whose transaction began more than MAX_TRANSACTION_SECONDS ago, of every login but the serving role's
members, the owner's members (the migrator) and a superuser: analysts' and the ETL's.

The same hold is what makes transaction ids dangerous (attack 32, F4): any login may assign them without writing
(`pg_current_xact_id()`, a NOTIFY), 181,000 a second from one session, and while a snapshot is held VACUUM freezes
nothing past it - PostgreSQL stops assigning ids ~2.1 billion past the oldest unfrozen one, and every write of the
ETL and the vault is refused. With this rule no snapshot of those logins outlives the bound, so anti-wraparound
VACUUM keeps up; each look also reads the database's `age(datfrozenxid)` (`xid_age`) for an alert in case it does not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from vault_service.adapters.postgres.lock_hogs import LockHogWatch
from vault_service.adapters.postgres.watchdog_rule import WatchdogRule

log = logging.getLogger(__name__)

MAX_TRANSACTION_SECONDS = 300.0
"""The oldest a transaction of an analyst's or the ETL's login may get before the watchdog ends its session
(TOKENVAULT_WATCHDOG_MAX_TRANSACTION_SECONDS; the database's floor, watchdog.rule_bounds of migration 0060, is the
same 300 s: the setting may raise the bound, never lower it - attack 32, F10). Each metering UPDATE of a client's
row made while a transaction is held is kept, +34 ns for every next metering statement of that client (measured,
attack 32). The lease scheme makes few: through the real vault the ETL's tokenize at 27,900 new values/s made 1.5
UPDATEs/s (a lease is a twentieth of the burst; the production ETL's new-token budget at its 20,000/s quota makes
~20/s), so five minutes keep ~450-6,000 versions, +0.02-0.2 ms per statement; a client over its limit meters every
refused call (one reveal client flat out: 234 UPDATEs/s), ~70,000 versions, +2.4 ms; a row at saturation (~3,000/s)
~125,000, +4.2 ms - bounded, far from the 2 s lock_timeout (0038), and pruned once the holder is gone. The ETL's
transactions are its batches (seconds); an analyst's query longer than five minutes belongs on a standby
(docs/production.md)."""
MAX_TRANSACTION_SECONDS_RANGE = (1.0, 86400.0)
"""The setting's bounds: from a second (tests) to a day."""

_XID_AGE = (
    "SELECT pg_catalog.age(d.datfrozenxid) FROM pg_catalog.pg_database d"
    " WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database()"
)
_END_OLD = (
    "SELECT t.pid, t.login, t.seconds, t.idle, t.held_horizon, t.ended, t.in_force"
    " FROM watchdog.end_old_transactions(%(bound)s::pg_catalog.float8) t"
)


@dataclass(frozen=True)
class OldTransaction:
    """A session ended (or that the server refused to end) for a transaction older than the bound."""

    pid: int
    login: str
    seconds: float
    """The transaction's age when it was ended."""
    idle: bool
    """Idle in its transaction (else running a statement)."""
    held_horizon: bool
    """It held a snapshot or an xid (backend_xmin / backend_xid): vacuum's horizon."""
    ended: bool


class OldTransactionWatch:
    """Migration 0060's watchdog.end_old_transactions() on the watchdog's warm connection, at each look.

    `max_seconds`: its setting; the server ends transactions older than the greater of it and the database's floor
    (watchdog.rule_bounds, the owner's: 300 s unless the owner changed it), so that the watchdog's login (an insider
    too) cannot end every analyst's and the ETL's transaction on demand (attack 32, F10). `in_force`: that bound, as
    the last look read it; a setting under the floor is said once, as a WARNING, at the first look (the start).
    `oldest_seconds`: the age of the oldest transaction of a watched login left after its last look (0 when none).
    `xid_age`: the database's age(datfrozenxid) at the last look that could read it (0 before the first).
    """

    def __init__(self, login: LockHogWatch, max_seconds: float = MAX_TRANSACTION_SECONDS) -> None:
        self._login = login
        self.max_seconds = max_seconds
        self.in_force = max_seconds
        self._said_floor = False
        self.oldest_seconds = 0.0
        self.xid_age = 0
        self._rule = WatchdogRule(
            login,
            _END_OLD,
            ("end_old_transactions", "in_force"),
            "migration 0060 is not applied: transactions of analysts and the ETL held open past"
            f" {max_seconds:g} s (which slow every metered vault call) are not ended by"
            " watchdog.end_old_transactions() (docs/threat-model.md, attack 32)",
        )

    @property
    def missing(self) -> bool:
        """Migration 0060's function is not there: this rule is off (said once, looked for again every 30 s)."""
        return self._rule.missing

    def look(self) -> list[OldTransaction]:
        """The rule once: each session it ended (or was refused); each logged."""
        conn = self._rule.connection()
        if conn is None:
            return []
        self._read_xid_age(conn)  # with the rule's function missing too: the gauge does not need it
        rows = self._rule.rows({"bound": self.max_seconds})
        if rows is None:
            return []
        found: list[OldTransaction] = []
        for pid, login, seconds, idle, held, ended, in_force in rows:
            self._note_bound(float(str(in_force)))
            if pid is None:
                self.oldest_seconds = float(str(seconds or 0.0))
                continue
            old = OldTransaction(int(str(pid)), str(login), float(str(seconds)), bool(idle), bool(held), bool(ended))
            found.append(old)
            self._say(old)
        return found

    def _note_bound(self, in_force: float) -> None:
        self.in_force = in_force
        if in_force > self.max_seconds and not self._said_floor:
            log.warning(
                f"TOKENVAULT_WATCHDOG_MAX_TRANSACTION_SECONDS ({self.max_seconds:g} s) is under the database's floor"
                f" ({in_force:g} s, watchdog.rule_bounds, the owner's; migration 0060): transactions are ended after"
                f" {in_force:g} s, not {self.max_seconds:g} s. The setting may only raise the bound (README)",
                extra={"max_transaction_seconds": self.max_seconds, "in_force_seconds": in_force},
            )
            self._said_floor = True

    def _read_xid_age(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """The database's age(datfrozenxid), kept as it was when it cannot be read.

        pg_database is a shared catalog, whose lock never takes a fast-path slot: with the lock table full (the
        lock-hog rule's case) the read fails, and that must not fail the look that ends the hog.
        """
        try:
            row = conn.execute(_XID_AGE, prepare=True).fetchone()
        except psycopg.errors.OutOfMemory:  # "out of shared memory": the lock table full
            return
        except BaseException:
            self._login.forget_connection()
            raise
        if row is not None and row[0] is not None:
            self.xid_age = int(str(row[0]))

    def _say(self, old: OldTransaction) -> None:
        extra = {
            "pid": old.pid,
            "login": old.login,
            "transaction_seconds": round(old.seconds, 1),
            "idle": old.idle,
            "held_horizon": old.held_horizon,
        }
        if old.ended:
            log.warning(
                f"ended a database session whose transaction was older than {self.in_force:g} s: a transaction"
                " held open keeps every version of the vault's metering rows since it began, and every metered vault"
                " call slows with them. Long queries belong on a standby (docs/production.md, attack 32)",
                extra=extra,
            )
        else:
            log.warning(
                f"a database session whose transaction is older than {self.in_force:g} s was to be ended and the"
                " server refused: the owner of watchdog.end_old_transactions() lacks pg_signal_backend (migration"
                " 0042). Look it up in pg_stat_activity",
                extra=extra,
            )
