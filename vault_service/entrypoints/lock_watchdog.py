"""The operators' lock watchdog: `python -m vault_service.entrypoints.lock_watchdog` (configured by environment).

`... lock_watchdog health`: exit 0 if the running watchdog's last successful look is under HEALTHY_WITHIN_SECONDS
old: a container's health check (readiness). `... lock_watchdog health --alive`: exit 0 if its loop ran (a look or a
start check, succeeded or not) within ALIVE_WITHIN_SECONDS: a liveness probe, which must not restart it while
PostgreSQL is down (it keeps trying). Both ask, as the vault's probes do, its health listener on a Unix socket only its
uid can reach (TOKENVAULT_WATCHDOG_HEALTH_ADDRESS=unix:/path: health_listener.py, health_socket.py, asked by
health_probe.py), which needs no certificate - so its metrics may be TLS-only, served to Prometheus's client
certificate (Kubernetes). Without that setting they read its plain metrics on the loopback port of
TOKENVAULT_WATCHDOG_METRICS_PORT (compose, the devstack); with TLS metrics the setting is required (review 34, R34-9:
`health` said unhealthy for ever, so its metrics could never be scraped in the shipped deployments).

Errors by kind: a database that cannot be reached (down, failing over, starting) is a dependency outage - the
start check is tried again with a bounded backoff, logged; exit 2 only for a misconfiguration (no DSN, a login
refused by the server, a login not IN ROLE tokenvault_watchdog, migration 0048 or the owner's grants missing).

Ends every database session, of any login but a superuser, the owner's members (the migrator) and its own,
holding more than 256 entries of PostgreSQL's shared lock table (attack 29, F1/F2: the ETL's login filling it
with savepoints that each write, or temporary tables, failed every vault call). It runs migration 0048's
watchdog.end_lock_hogs() every TOKENVAULT_WATCHDOG_LOOK_SECONDS (0.25 s) on one warm connection of a login IN
ROLE tokenvault_watchdog, which may do nothing else: the vault's own login must not end other roles' sessions
(docs/threat-model.md). One log line per session ended (pid, entries; never its statement or login).

At each look it also runs watchdog.end_notify_queue_holder() (0053; review 35, R35-1): LISTEN/NOTIFY need
no privilege, and a listener held in a transaction while another session sends filled the data disk through
pg_notify (1.16 GB in 5 s; PostgreSQL 15 lets the queue reach 8 GB). Once pg_notification_queue_usage() passes
NOTIFY_QUEUE_BOUND (~8 MB; the vault and the ETL never notify), sessions in a transaction are ended, one per look
while it still grows (notify_queue.NotifyQueueWatch): other logins' (analysts') first, then the ETL's, whenever
their transaction began (attack 32, F1: a relay of listeners begun after the crossing; migration 0056), oldest
first within each (migration 0054), the vault's last: those begun before the previous look, youngest first (migration
0063; attack 33, A5), a lock waiter after them, oldest first, and one holding a key job's or the key-generation lock
only past notify_queue_spared_until, after all (migration 0064; attack 35, N1); a vault session seen in a
transaction at every look for 0.2 s is one whatever its transaction's age, after the old ones, the longest busy first
(migration 0065; attack 36, L1: a listener renewing its transaction in one message), a vault session seen waiting
for its client outside a transaction in a burst of samples before the end skipped (migration 0066; review 37,
R37-2: a request session busy back to back); before all of them, every session seen blocked writing to its client
outside a statement at two consecutive looks, all in one look (migration 0067; attack 42: a listener blocked in the
flush after its read pass committed holds the tail with no transaction); one log line each (pid,
login, usage), counted in tokenvault_lock_watchdog_notify_queue_sessions_total. The bound, the crossing's time and
the pace are the server's (migration 0060; attack 32, F10): it passes none of them, so its login cannot end a
session the rule would not.

At each look it also runs migration 0057's watchdog.end_old_transactions() (attack 32, F2): a transaction held open
by any login (idle in psql, or one long statement) keeps the xmin horizon, so every version of the vault's metering
rows written since is kept and every metered vault call slows with them, without bound. The sessions of analysts and
the ETL (every login but the serving role's members, the owner's members and a superuser) whose transaction began
more than TOKENVAULT_WATCHDOG_MAX_TRANSACTION_SECONDS ago (300 s; never under the database's floor,
watchdog.rule_bounds, 300 s: migration 0060, said at the first look if the setting is under it) are ended, idle or
active
(old_transactions.OldTransactionWatch); one log line each (pid, login, age; never its statement), counted in
tokenvault_lock_watchdog_old_transaction_sessions_total; the oldest left in
tokenvault_lock_watchdog_oldest_transaction_seconds; the database's age(datfrozenxid) in
tokenvault_lock_watchdog_database_xid_age (attack 32, F4: transaction ids burnt behind a held snapshot).

At each look it also runs migration 0059's watchdog.end_vault_sessions_past_budget() (attack 32, F7): PostgreSQL
limits connections per login, and logins IN ROLE tokenvault_vault minted by Vault (each with its own CONNECTION LIMIT)
took every slot of the server. The sessions of all members of tokenvault_vault together are held to
TOKENVAULT_WATCHDOG_VAULT_SESSIONS (0, the default: tokenvault_vault's own CONNECTION LIMIT, migration 0046's); past
it the excess is ended - the most recently created login's first, its idle ones first, never one holding the audit
chain's lock (vault_sessions.VaultSessionWatch); one log line each (pid, login), counted in
tokenvault_lock_watchdog_vault_budget_sessions_total; the count in tokenvault_lock_watchdog_vault_sessions.

Its DSN: TOKENVAULT_WATCHDOG_DSN, or TOKENVAULT_WATCHDOG_DSN_FILE naming a file read again at every (re)connection -
Kubernetes' (Vault's database secrets engine, rendered by the Vault agent, rendered again with a new login as each
lease ends: read once, a reconnection after the old login was dropped failed until the pod restarted; R34-12).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from prometheus_client import REGISTRY, Counter, Gauge

from tokenvault_common.database_dsn import Conninfo, DsnFile, DsnFileError, read_dsn_setting
from tokenvault_common.env import ConfigError, EnvReader
from tokenvault_common.health import ListingHealthServicer
from tokenvault_common.logging_setup import configure_logging
from tokenvault_common.metrics_endpoint import (
    MetricsEndpointError,
    MetricsTls,
    read_metrics_tls,
    serve_metrics,
    tls_context,
)
from tokenvault_common.metrics_plaintext import read_metrics_plaintext
from vault_service.adapters.postgres.old_transactions import MAX_TRANSACTION_SECONDS, MAX_TRANSACTION_SECONDS_RANGE
from vault_service.adapters.postgres.vault_sessions import VAULT_SESSIONS_RANGE
from vault_service.adapters.postgres.watchdog_login import (
    DatabaseDown,
    LookFailed,
    Misconfigured,
    RuleMissing,
    WatchdogLogin,
)
from vault_service.entrypoints.health_listener import HealthListener, create_health_server
from vault_service.entrypoints.health_probe import main as health_probe
from vault_service.entrypoints.health_socket import UnsafeHealthSocket, address_problem, unix_socket_path

log = logging.getLogger("lock_watchdog")

SESSIONS = Counter(
    "tokenvault_lock_watchdog_sessions_total",
    "Database sessions found holding more than 256 lock-table entries, by whether they were ended (gone: exiting)",
    ["ended"],
)
for _ended in ("true", "false", "gone"):  # each series scraped from the start, at 0: a first hog is an increase
    SESSIONS.labels(ended=_ended)
NOTIFY_QUEUE_SESSIONS = Counter(
    "tokenvault_lock_watchdog_notify_queue_sessions_total",
    "Database sessions in a transaction while the NOTIFY queue grows past its bound, by whether ended",
    ["ended"],
)
for _ended in ("true", "false"):
    NOTIFY_QUEUE_SESSIONS.labels(ended=_ended)
NOTIFY_QUEUE_STATE_NOT_TAKEN = Counter(
    "tokenvault_lock_watchdog_notify_queue_state_not_taken_total",
    "Looks of the NOTIFY rule that could not take this watchdog's own state on the server and so ended nothing"
    " (migration 0062's guard; no known path: another session holding it)",
)
NOTIFY_QUEUE_USAGE = Gauge(
    "tokenvault_lock_watchdog_notify_queue_usage_ratio",
    "pg_notification_queue_usage() at its last look: the NOTIFY queue's share of its maximum (8 GB on PostgreSQL 15)",
)
OLD_TRANSACTION_SESSIONS = Counter(
    "tokenvault_lock_watchdog_old_transaction_sessions_total",
    "Database sessions of analysts or the ETL in a transaction older than its bound, by whether they were ended",
    ["ended"],
)
for _ended in ("true", "false"):
    OLD_TRANSACTION_SESSIONS.labels(ended=_ended)
OLDEST_TRANSACTION = Gauge(
    "tokenvault_lock_watchdog_oldest_transaction_seconds",
    "Age of the oldest transaction of a login it watches (not the vault's, the owner's or a superuser's) left after"
    " its last look",
)
DATABASE_XID_AGE = Gauge(
    "tokenvault_lock_watchdog_database_xid_age",
    "age(datfrozenxid) of the vault's database at its last look: transaction ids since the oldest unfrozen one"
    " (PostgreSQL stops assigning new ones ~2.1 billion past it; attack 32, F4)",
)
MAX_TRANSACTION = Gauge(
    "tokenvault_lock_watchdog_max_transaction_seconds",
    "Its bound on those transactions' age in force: TOKENVAULT_WATCHDOG_MAX_TRANSACTION_SECONDS, or the database's"
    " floor if greater (watchdog.rule_bounds, migration 0060)",
)
VAULT_BUDGET_SESSIONS = Counter(
    "tokenvault_lock_watchdog_vault_budget_sessions_total",
    "Sessions of logins IN ROLE tokenvault_vault ended because the members' sessions together were past their"
    " budget, by whether they were ended",
    ["ended"],
)
for _ended in ("true", "false"):
    VAULT_BUDGET_SESSIONS.labels(ended=_ended)
VAULT_SESSIONS = Gauge(
    "tokenvault_lock_watchdog_vault_sessions",
    "Sessions of the logins IN ROLE tokenvault_vault together at its last look (before it ended any)",
)
VAULT_SESSION_BUDGET = Gauge(
    "tokenvault_lock_watchdog_vault_session_budget",
    "The budget it holds those sessions to (TOKENVAULT_WATCHDOG_VAULT_SESSIONS, or tokenvault_vault's CONNECTION"
    " LIMIT; 0: none)",
)
OWN_LOGIN_STRANGERS = Counter(
    "tokenvault_lock_watchdog_own_login_strangers_total",
    "Sessions of its own database login that were not its own, ended: a copy of its credentials in use (attack 33)",
)
LOOK_FAILURES = Counter("tokenvault_lock_watchdog_look_failures_total", "Looks that failed (its connection lost)")
LAST_LOOK = Gauge("tokenvault_lock_watchdog_last_look_timestamp_seconds", "When the last look succeeded (Unix time)")
LAST_RUN = Gauge(
    "tokenvault_lock_watchdog_loop_timestamp_seconds",
    "When its loop last ran: a look or a start check, succeeded or not (Unix time; its liveness)",
)
START_FAILURES = Counter(
    "tokenvault_lock_watchdog_start_check_failures_total", "Start checks that failed because the database was down"
)

HEALTHY_WITHIN_SECONDS = 10.0
"""How recent the last successful look must be for `health` to say healthy."""
ALIVE_WITHIN_SECONDS = 60.0
"""How recent the loop's last run must be for `health --alive` (a start check may take the login's connect timeout,
watchdog_login.CONNECT_TIMEOUT_SECONDS, plus START_RETRY_MAX_SECONDS)."""
START_RETRY_FIRST_SECONDS = 0.5
"""The start check's first wait while the database cannot be reached (doubled at each try)."""
START_RETRY_MAX_SECONDS = 15.0
"""The start check's longest wait between tries while the database cannot be reached."""
LIVENESS_SERVICE = "tokenvault.liveness"
"""Its health listener's liveness service, named as the vault's (`health_probe --service tokenvault.liveness`)."""
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SLOTS_TAKEN = "too many connections for role"
"""PostgreSQL's refusal of a login whose CONNECTION LIMIT is reached: at the start, someone holds every slot of it."""
HEALTH_ADDRESS = "TOKENVAULT_WATCHDOG_HEALTH_ADDRESS"
"""The setting of its health listener's Unix socket (see WatchdogConfig.health_address)."""


@dataclass(frozen=True)
class WatchdogConfig:
    """The watchdog's settings (environment)."""

    dsn: str
    """A login IN ROLE tokenvault_watchdog (TOKENVAULT_WATCHDOG_DSN; required unless dsn_file; "" then)."""
    dsn_file: DsnFile | None
    """A file holding that DSN, read again at every (re)connection: credentials that rotate, as the Vault agent
    renders them (TOKENVAULT_WATCHDOG_DSN_FILE; instead of TOKENVAULT_WATCHDOG_DSN; read_dsn_setting)."""
    look_seconds: float
    """How often it looks (TOKENVAULT_WATCHDOG_LOOK_SECONDS, 0.25 by default, 0.05-5)."""
    log_level: str
    """TOKENVAULT_WATCHDOG_LOG_LEVEL (INFO)."""
    metrics_port: int
    """Prometheus metrics port; 0 (the default) disables (TOKENVAULT_WATCHDOG_METRICS_PORT)."""
    metrics_address: str
    """Address the metrics endpoint binds (TOKENVAULT_WATCHDOG_METRICS_ADDRESS, default 127.0.0.1)."""
    metrics_tls: MetricsTls | None
    """TOKENVAULT_WATCHDOG_METRICS_TLS_CERT, _KEY, _CLIENT_CA (all three or none), as the vault's metrics."""
    max_transaction_seconds: float
    """How old a transaction of an analyst's or the ETL's login may get before its session is ended
    (TOKENVAULT_WATCHDOG_MAX_TRANSACTION_SECONDS, 300 by default, 1-86400; migration 0057). The database's floor
    (watchdog.rule_bounds, 300 s; migration 0060) applies if greater: the setting may raise the bound, never lower
    it."""
    vault_sessions: int
    """The most sessions the logins IN ROLE tokenvault_vault may hold together before it ends the excess
    (TOKENVAULT_WATCHDOG_VAULT_SESSIONS; 0, the default: tokenvault_vault's CONNECTION LIMIT; migration 0059)."""
    health_address: str
    """TOKENVAULT_WATCHDOG_HEALTH_ADDRESS: `unix:/absolute/path`, a socket in a 0700 directory of its uid, where
    `health` asks it (as the vault's TOKENVAULT_HEALTH_ADDRESS); "" (the default): `health` reads its plain
    metrics instead. Required with metrics over TLS."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WatchdogConfig:
        """Read and check every setting; ConfigError naming each problem."""
        read = EnvReader(env)
        port = read.integer("TOKENVAULT_WATCHDOG_METRICS_PORT", 0, 0, 65535)
        address = read.text("TOKENVAULT_WATCHDOG_METRICS_ADDRESS", "127.0.0.1")
        health_address = read.text(HEALTH_ADDRESS, "")
        if health_address and unix_socket_path(health_address) is None:
            read.problems.append(f"{HEALTH_ADDRESS} must be unix:/absolute/path (a socket only its uid reaches)")
        elif health_address and (problem := address_problem(health_address)):
            read.problems.append(f"{HEALTH_ADDRESS}: {problem}")
        dsn, dsn_file = read_dsn_setting(read, env, "TOKENVAULT_WATCHDOG_DSN")
        config = cls(
            dsn=dsn,
            dsn_file=dsn_file,
            look_seconds=read.number("TOKENVAULT_WATCHDOG_LOOK_SECONDS", 0.25, 0.05, 5.0),
            log_level=read.text("TOKENVAULT_WATCHDOG_LOG_LEVEL", "INFO").upper(),
            metrics_port=port,
            metrics_address=address,
            metrics_tls=read_metrics_tls(read, "TOKENVAULT_WATCHDOG_METRICS", "TOKENVAULT_TLS_CLIENT_CA"),
            max_transaction_seconds=read.number(
                "TOKENVAULT_WATCHDOG_MAX_TRANSACTION_SECONDS", MAX_TRANSACTION_SECONDS, *MAX_TRANSACTION_SECONDS_RANGE
            ),
            vault_sessions=read.integer("TOKENVAULT_WATCHDOG_VAULT_SESSIONS", 0, *VAULT_SESSIONS_RANGE),
            health_address=health_address,
        )
        if config.metrics_tls and config.metrics_port and not health_address:
            read.problems.append(
                f"metrics over TLS (TOKENVAULT_WATCHDOG_METRICS_TLS_*) need {HEALTH_ADDRESS}=unix:/path: its probes"
                " (`health`, `health --alive`) hold no certificate and would say unhealthy for ever"
            )
        read_metrics_plaintext(read, "TOKENVAULT_WATCHDOG_METRICS", port, address)
        read.check("lock_watchdog")
        return config

    @property
    def conninfo(self) -> Conninfo:
        """The DSN, or (with dsn_file) what reads it from the file at each (re)connection (DsnFileError)."""
        return self.dsn_file or self.dsn


class LockWatchdog:
    """Migration 0048's rule, applied every `look_seconds` from one warm connection, reconnecting if it drops.

    `dsn`: the DSN, or a callable giving it at each (re)connection (a DSN file: WatchdogConfig.conninfo).
    """

    def __init__(
        self,
        dsn: Conninfo,
        look_seconds: float = 0.25,
        max_transaction_seconds: float = MAX_TRANSACTION_SECONDS,
        vault_sessions: int = 0,
    ) -> None:
        self.login = WatchdogLogin(dsn, max_transaction_seconds, vault_sessions)
        self.look_seconds = look_seconds
        MAX_TRANSACTION.set(max_transaction_seconds)

    def check(self) -> None:
        """Log in once and check the rule can run.

        Misconfigured saying which migration or grant is missing, or that the server refuses the login;
        DatabaseDown if the database cannot be reached (an outage).
        """
        LAST_RUN.set(time.time())
        self.login.check()
        defaults = self.login.defaults
        if defaults and (defaults.defaults_set or defaults.not_pinned):
            # Any login may set defaults for its own later sessions: a copy of its credentials did, once, and every
            # later look failed, across restarts (attack 35, N7). Those it pins are overridden; the others stay.
            log.warning(
                "role or database defaults are set for this watchdog's login (pg_db_role_setting): those of settings"
                " it pins at log-in are overridden, the others are in effect. Nothing of the shipped stack sets them:"
                " a copy of its credentials may have (look for its sessions, rotate the login). Remove them as the"
                " owner: ALTER ROLE <login> RESET ALL (docs/threat-model.md, attack 35 N7)",
                extra={
                    "overridden": ",".join(defaults.overridden),
                    "in_effect": ",".join(defaults.in_effect),
                    "not_pinned": ",".join(defaults.not_pinned),
                },
            )

    def look(self) -> int:
        """One look: the sessions found and ended (each logged by the rule, counted here); how many were found.

        RuleMissing if migration 0048's function is gone (the look watched nothing: a failed look, not a success);
        LookFailed if its connection was lost; DsnFileError if its DSN file cannot be used.
        """
        hogs = self.login.look()
        for hog in hogs:
            SESSIONS.labels(ended="true" if hog.ended else "gone" if hog.gone else "false").inc()
        OWN_LOGIN_STRANGERS.inc(len(self.login.hold_own_login()))
        not_taken = self.login.notify_queue.state_not_taken
        for holder in self.login.look_at_notify_queue():
            NOTIFY_QUEUE_SESSIONS.labels(ended="true" if holder.ended else "false").inc()
        if self.login.notify_queue.state_not_taken > not_taken:
            NOTIFY_QUEUE_STATE_NOT_TAKEN.inc(self.login.notify_queue.state_not_taken - not_taken)
        NOTIFY_QUEUE_USAGE.set(self.login.notify_queue.usage)
        for old in self.login.look_at_old_transactions():
            OLD_TRANSACTION_SESSIONS.labels(ended="true" if old.ended else "false").inc()
        OLDEST_TRANSACTION.set(self.login.old_transactions.oldest_seconds)
        MAX_TRANSACTION.set(self.login.old_transactions.in_force)
        DATABASE_XID_AGE.set(self.login.old_transactions.xid_age)
        for member in self.login.look_at_vault_sessions():
            VAULT_BUDGET_SESSIONS.labels(ended="true" if member.ended else "false").inc()
        VAULT_SESSIONS.set(self.login.vault_sessions.sessions)
        VAULT_SESSION_BUDGET.set(self.login.vault_sessions.held_to)
        LAST_LOOK.set(time.time())
        return len(hogs)

    def wait_for_database(self, stop: threading.Event) -> bool:
        """`check()` until it passes (True) or `stop` is set (False).

        A database that cannot be reached is tried again with a doubling backoff (START_RETRY_FIRST_SECONDS to
        START_RETRY_MAX_SECONDS), each try logged and counted. Misconfigured is raised at once.
        """
        delay = START_RETRY_FIRST_SECONDS
        while not stop.is_set():
            try:
                self.check()
            except DatabaseDown as error:
                START_FAILURES.inc()
                if SLOTS_TAKEN in str(error):  # the server answered: not an outage
                    log.error(
                        "every connection slot of this watchdog's login is taken, so it cannot start: a copy of its"
                        " credentials in use (it would end them once in: attack 33, A4), another watchdog on the same"
                        " login, or its own earlier sessions not yet gone. Look up the login's sessions in"
                        " pg_stat_activity; end the ones of no running watchdog as the owner and rotate the login's"
                        " credentials if they leaked (docs/threat-model.md): trying again",
                        extra={"error": error.cause, "detail": str(error), "retry_in_seconds": delay},
                    )
                else:
                    log.warning(
                        "the database cannot be reached (an outage, not a setting): trying again",
                        extra={"error": error.cause, "detail": str(error), "retry_in_seconds": delay},
                    )
                if stop.wait(delay):
                    return False
                delay = min(delay * 2, START_RETRY_MAX_SECONDS)
                continue
            return True
        return False

    def run(self, stop: threading.Event) -> None:
        """Look every `look_seconds` until `stop` is set; a failed look is said once (each kind), then tried again."""
        failing: str | None = None
        """The kind of the failed looks since the last good one: said when it starts or changes."""
        try:
            while not stop.wait(self.look_seconds):
                LAST_RUN.set(time.time())
                try:
                    self.look()
                except RuleMissing as error:
                    LOOK_FAILURES.inc()
                    if failing != "missing":
                        log.error(str(error))
                    failing = "missing"
                    continue
                except DsnFileError as error:  # its file gone, empty or refused after the start: no (re)connection
                    LOOK_FAILURES.inc()
                    if failing != "dsn":
                        log.error("a look failed: %s", error)
                    failing = "dsn"
                    continue
                except LookFailed as error:
                    LOOK_FAILURES.inc()
                    if SLOTS_TAKEN in str(error):  # the server answered: its login's slots are someone else's
                        if failing != "slots":
                            _say_slots_taken(str(error), error.cause)
                        failing = "slots"
                        continue
                    if failing != "connection":
                        log.warning(
                            "a look failed (its connection is opened again at the next look)",
                            extra={"error": error.cause},
                        )
                    failing = "connection"
                    continue
                if failing:
                    log.info("looking again")
                failing = None
        finally:
            self.login.close()


_ROLE_NAMED = re.compile(r'too many connections for role "([^"]*)"')


def _say_slots_taken(detail: str, cause: str) -> None:
    """ERROR (once per episode): logging in as its login was refused because every slot of it is taken.

    At a login rotation (the DSN file rendered with the next login, then Vault drops the old one) a copy of the
    rendered credentials can take every slot of the next login before the watchdog logs in as it: it then never
    logs in again and every rule is off (attack 35, N4). Said as R36-6 says it at the start.
    """
    found = _ROLE_NAMED.search(detail)
    log.error(
        "logging in as this watchdog's login is refused: every connection slot of it is taken by sessions not this"
        " watchdog's - a copy of its credentials in use (at a rotation: of the login rendered last), so no rule runs."
        " Report it to the security team; end the login's sessions as the owner and rotate its credentials"
        " (docs/threat-model.md, attack 33 A4 / attack 35 N4): trying again at each look",
        extra={"login": found.group(1) if found else "?", "error": cause},
    )


class WatchdogHealth(ListingHealthServicer):
    """Its health listener's answers, from its gauges at each call (as `healthy` reads them from its metrics).

    "" (readiness): SERVING while its last look is under HEALTHY_WITHIN_SECONDS old; LIVENESS_SERVICE: SERVING while
    its loop ran within ALIVE_WITHIN_SECONDS.
    """

    def status_of(self, service: str) -> int | None:
        """SERVING or NOT_SERVING as of now; None for a service it does not have."""
        self.refresh()
        return super().status_of(service)

    def List(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Both services' statuses as of now."""
        self.refresh()
        return super().List(request, context)

    def refresh(self) -> None:
        """Set both statuses from the gauges."""
        now = time.time()
        for service, gauge, within in (
            ("", "last_look", HEALTHY_WITHIN_SECONDS),
            (LIVENESS_SERVICE, "loop", ALIVE_WITHIN_SECONDS),
        ):
            at = REGISTRY.get_sample_value(f"tokenvault_lock_watchdog_{gauge}_timestamp_seconds") or 0.0
            self.set(service, _SERVING if now - at < within else _NOT_SERVING)


def healthy(port: int, now: float | None = None, alive: bool = False) -> bool:
    """Whether the watchdog serving plain metrics on 127.0.0.1:`port` looked within HEALTHY_WITHIN_SECONDS.

    `alive`: whether its loop ran within ALIVE_WITHIN_SECONDS instead (a look or start check, succeeded or not).
    """
    gauge = "loop" if alive else "last_look"
    within = ALIVE_WITHIN_SECONDS if alive else HEALTHY_WITHIN_SECONDS
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{int(port)}/metrics", timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return False
    found = re.search(rf"^tokenvault_lock_watchdog_{gauge}_timestamp_seconds (\S+)$", text, re.MULTILINE)
    return found is not None and (time.time() if now is None else now) - float(found.group(1)) < within


def main(env: Mapping[str, str] | None = None, argv: Sequence[str] | None = None) -> int:
    """Run the watchdog until SIGTERM or SIGINT; 2 on a setting, migration or grant that keeps it from working.

    `argv` ["health"]: the health check instead (0 healthy, 1 not); ["health", "--alive"]: the liveness check.
    A database that cannot be reached at the start is waited for (logged), never an exit.
    """
    env = os.environ if env is None else env
    argv = sys.argv[1:] if argv is None else argv
    if list(argv) in (["health"], ["health", "--alive"]):
        alive = list(argv) == ["health", "--alive"]
        if address := env.get(HEALTH_ADDRESS):  # its health listener, as the vault's probe asks the vault's
            return health_probe(["--address", address, *(["--service", LIVENESS_SERVICE] if alive else [])])
        port = int(env.get("TOKENVAULT_WATCHDOG_METRICS_PORT") or 0)
        return 0 if healthy(port, alive=alive) else 1
    try:
        config = WatchdogConfig.from_env(env)
    except ConfigError as error:
        print(f"lock_watchdog: {error}", file=sys.stderr)
        return 2
    configure_logging("lock_watchdog", config.log_level)
    watchdog = LockWatchdog(config.conninfo, config.look_seconds, config.max_transaction_seconds, config.vault_sessions)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    health: HealthListener | None = None
    try:
        try:
            context = tls_context(config.metrics_tls) if config.metrics_port and config.metrics_tls else None
            if config.metrics_port:  # first: its liveness while it waits for the database
                serve_metrics(config.metrics_port, config.metrics_address, context, "TOKENVAULT_WATCHDOG_METRICS_PORT")
            if config.health_address:
                health, _ = create_health_server(WatchdogHealth(), config.health_address)
                health.start()
            if not watchdog.wait_for_database(stop):
                log.info("stopped")
                return 0
        except (Misconfigured, MetricsEndpointError, UnsafeHealthSocket) as error:
            log.error(str(error))
            print(f"lock_watchdog: {error}", file=sys.stderr)
            return 2
        log.info(
            "started",
            extra={
                "look_seconds": config.look_seconds,
                "max_transaction_seconds": config.max_transaction_seconds,
                "vault_sessions": config.vault_sessions,
            },
        )
        watchdog.run(stop)
        log.info("stopped")
        return 0
    finally:
        if health is not None:
            health.stop(0)


if __name__ == "__main__":
    sys.exit(main())
