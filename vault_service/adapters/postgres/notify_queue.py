"""The lock watchdog's NOTIFY queue rule (migrations 0053-0067; review 35, R35-1): who may hold the queue's tail, ended.

LISTEN/NOTIFY need no privilege, and a listener held in a transaction while another session sends kept the queue's
tail: pg_notify grew 1.16 GB in 5 s on the data disk (PostgreSQL 15 lets it reach 8 GB). The rule and its state are
the server's (watchdog.end_notify_queue_holder()); NotifyQueueWatch runs it once per look on the watchdog's warm
connection and logs what it ended. Its psycopg errors reach WatchdogLogin, which names them (LookFailed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vault_service.adapters.postgres.lock_hogs import LockHogWatch
from vault_service.adapters.postgres.watchdog_rule import WatchdogRule

log = logging.getLogger(__name__)

NOTIFY_QUEUE_BOUND = 0.001
"""The NOTIFY queue's share of its maximum (pg_notification_queue_usage(); 8 GB on PostgreSQL 15: 0.001 is 1,049
pages, ~8.4 MB in $PGDATA/pg_notify) past which the sessions that may hold its tail are ended (review 35, R35-1):
the default of watchdog.rule_bounds (migration 0060), where the bound lives - the server's, not this process's
(attack 32, F10: a caller's bound let the watchdog's login end any session). The vault and the ETL never LISTEN nor
NOTIFY, so nothing of theirs is in the queue; a listener that reads keeps it at a few pages (a backend reads its
notifications between transactions, and the tail is cut every 4 pages), so 1,049 pages means a listener held in a
transaction (or whose client does not read its socket) while someone sends. Small beside the data disk's headroom:
at the 230 MB/s measured (review 35) the queue reaches ~70 MB before a look (0.25 s) sees it and the next ends the
holder; the disk must keep that free (docs/production.md)."""

_END_QUEUE_HOLDER = (
    "SELECT h.usage, h.bound, h.wanted, h.pid, h.login, h.ended, h.ended_so_far"
    " FROM watchdog.end_notify_queue_holder() h"
)


@dataclass(frozen=True)
class QueueHolder:
    """A session ended (or that the server refused to end) as a possible holder of the NOTIFY queue's tail."""

    pid: int
    login: str
    ended: bool
    usage: float
    """The queue's usage when it was ended (a share of its maximum)."""
    ended_so_far: int
    """Sessions ended since the queue passed the bound, this one included."""


class NotifyQueueWatch:
    """Ends the sessions that may hold the NOTIFY queue's tail while the queue grows past its bound.

    Migration 0060's watchdog.end_notify_queue_holder() (its candidates and order: 0054, 0056) on the watchdog's warm
    connection, once per look. The rule and its state are the server's, none of them passed by this process (attack
    32, F10: the watchdog's login is an insider too; with a bound and an anchor of the caller's it ended any session
    in a transaction on demand): the bound, the rise and the shortest time between two ends in watchdog.rule_bounds
    (the owner's), the anchor and the lowest usage since the last end in watchdog.notify_queue_looks, one row per
    calling session (migration 0062: no other session - another of this login's - can lock, reset or forge this
    watchdog's; attack 33, A1).

    The rule: a look that first sees the usage over the bound notes the server's time (the anchor); each later look
    while it is over and still grows (0.2 s or more after the anchor or the last end) ends one session in a
    transaction: other logins' (analysts', and this login's own) first, then the ETL's, oldest transaction first
    within each, whenever it began; the vault's last (migration 0063; attack 33, A5: one pod's login must not reach
    another pod's key job): never one holding a key job's or the key-generation lock (the vault's lock functions
    refuse a session that LISTENs, so such a session cannot hold the tail), the others youngest transaction first,
    and only those begun before the server's previous look and 0.2 s ago; since 0064 (attack 35, N1: another pod's
    requests waiting on a lock were ended in a listener's stead) a lock waiter after those, oldest first, and a key
    lock's holder only past notify_queue_spared_until, after all; since 0065 (attack 36, L1: a listener renewing its
    transaction in one message was never 0.2 s old) a vault session seen in a transaction at every look of this
    caller for 0.2 s (watchdog.notify_queue_busy) whatever its transaction's age, after the old ones, the longest
    busy first; since 0066 (review 37, R37-2: a request session busy back to back had the longer run) the rule first
    samples the vault's busy sessions for up to 0.1 s and skips one seen idle outside a transaction waiting on
    ClientRead (it has read its notifications). No SQL lists who LISTENs; a session that can hold the tail is in a
    transaction (its own, or the one in which its backend sends its notifications to a client that does not read
    them) or blocked flushing them after its read pass committed (no transaction, ClientWrite: attack 42). Since 0067
    every session seen waiting on ClientWrite outside a statement at two consecutive looks, its state unchanged, is
    ended first, all of them in that look (one row each), and a session with no transaction waiting on ClientWrite is
    a candidate in the order above too. Why whenever they began (attack 32, F1): the tail moves to
    the next listener once its holder is ended, and one that began holding after the crossing is already past the
    bound behind the head. The vault never LISTENs, so its calls begun since the last look are left.

    The next end comes only once the usage has risen 8 pages above its lowest since the last end (seen by the
    server's looks): the tail moves only when a notifier writes (every 4 pages) and its holder is gone, so a rise of
    more than 4 pages past that low means it moved and is still held. Under the bound again, it starts over.
    """

    def __init__(self, login: LockHogWatch) -> None:
        self.bound = NOTIFY_QUEUE_BOUND
        """The server's bound, as its last look read it."""
        self.usage = 0.0
        """The usage its last look read."""
        self.passed = False
        """The last look saw the usage over the bound."""
        self.ended_so_far = 0
        self._said_none = False
        self.state_not_taken = 0
        """Looks whose function could not take this session's own state (migration 0062's guard): counted."""
        self._said_not_taken = False
        self._rule = WatchdogRule(
            login,
            _END_QUEUE_HOLDER,
            ("end_notify_queue_holder",),
            "migration 0060 is not applied: sessions holding the NOTIFY queue's tail while it fills the data"
            " disk are not ended by watchdog.end_notify_queue_holder() (docs/threat-model.md, review 35)",
        )

    @property
    def missing(self) -> bool:
        """Migration 0060's function is not there: this rule is off (said once, looked for again every 30 s)."""
        return self._rule.missing

    def look(self) -> list[QueueHolder]:
        """The rule once: the sessions it ended (or was refused), if any; each logged.

        One row per session ended at this look (migration 0067 ends every session stalled writing to its client at
        once), or one row with no pid when it ends no one.
        """
        rows = self._rule.rows()
        if not rows:
            return []
        usage, bound, wanted = rows[0][0], rows[0][1], rows[0][2]
        self.usage = float(str(usage))
        self.bound = float(str(bound))
        if wanted is None:  # 0062: the function could not take this session's own state: this look ended nothing
            self.state_not_taken += 1
            if not self._said_not_taken:
                log.error(
                    "the NOTIFY rule could not take this watchdog's own state on the server: its looks end nothing"
                    " while that lasts. Its state is kept per session (migration 0062) and no other session should"
                    " hold it: look in pg_locks for who holds a lock on watchdog.notify_queue_looks, and report it to"
                    " the security team (docs/threat-model.md, attack 33)",
                    extra={"usage": self.usage},
                )
                self._said_not_taken = True
            return []
        if self.usage <= self.bound:
            if self.passed:
                log.info(
                    "the NOTIFY queue is under its bound again",
                    extra={"usage": self.usage, "sessions_ended": self.ended_so_far},
                )
            self.passed, self.ended_so_far, self._said_none, self._said_not_taken = False, 0, False, False
            return []
        self.passed = True
        holders = [self._ended(row) for row in rows if row[3] is not None]
        if not holders and wanted and not self._said_none:
            log.warning(
                "the NOTIFY queue grows past its bound and no session the rule may end is in a transaction or"
                " blocked writing to its client (a superuser's or the owner's members' holds its tail?): find who"
                " LISTENs in a transaction, or whose backend waits on ClientWrite, in pg_stat_activity"
                " (docs/threat-model.md, review 35, attack 42)",
                extra={"usage": self.usage},
            )
            self._said_none = True
        return holders

    def _ended(self, row: tuple[object, ...]) -> QueueHolder:
        _usage, _bound, _wanted, pid, login, ended, ended_so_far = row
        self.ended_so_far = max(self.ended_so_far, int(str(ended_so_far)))
        holder = QueueHolder(int(str(pid)), str(login), bool(ended), self.usage, int(str(ended_so_far)))
        extra = {"pid": holder.pid, "login": holder.login, "usage": holder.usage, "sessions_ended": holder.ended_so_far}
        if holder.ended:
            log.error(
                "ended a database session in a transaction while the NOTIFY queue grows past its bound: the queue is"
                f" past {self.bound:.2%} of its maximum (8 GB on PostgreSQL 15, in pg_notify on the data disk) and"
                " grows; a listener held in a transaction (or not reading its socket) keeps it from being cut, and a"
                " full data disk fails the ETL's writes and restarts the server. The vault and the ETL never LISTEN"
                " nor NOTIFY. Report it to the security"
                " team (docs/threat-model.md, review 35)",
                extra=extra,
            )
        else:
            log.warning(
                "a database session in a transaction while the NOTIFY queue grows past its bound was to be ended and"
                " the server refused: the owner of watchdog.end_notify_queue_holder() lacks pg_signal_backend"
                " (migration 0042). Look it up in pg_stat_activity",
                extra=extra,
            )
        return holder
