"""The audit reports the service makes for a client certificate (the AuditReports gRPC service): one at a time, bounded.

`audit verify` and `who-saw` ran in the operator's process with the service's own database role
and Vault login, so whoever verified the log held what the service holds, and could decrypt every
value outside the audit (DESIGN §1b). Here the running service reads and verifies with its own
credentials (`Verify`: a session of its own, entrypoints/audit_report_session.py) against its own
exported checkpoint copy, and the caller holds only a client certificate the policy gives the
report (`audit_reports`). No value is in a report: the verdict, and who-saw's rows (client, time,
purpose, outcome).

Every call is on the record: a refusal (not given the report, a malformed call, one while
another report runs, one past its deadline) as every refusal, throttled per peer; a report made
as a row of its own naming the certificate (CN, serial, SHA-256), written before the answer
leaves. Who asked about which token is sensitive too: a who-saw row keeps the token's keyed hash
(as a reveal's row does), never the token, so a later who-saw of that token lists the question.

Reports read the whole log, so they are bounded: one at a time per vault process
(`AuditReportRunning`, naming the running one), and each within its call's deadline, at most
MAX_REPORT_SECONDS (`AuditReportTooLong`): the reads' statements end there.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from vault_service.domain.audit import AuditEvent, AuditRecord
from vault_service.domain.errors import (
    AuditCopyRefused,
    AuditReportRunning,
    AuditReportTooLong,
    InvalidRequest,
    VaultError,
)
from vault_service.domain.identity import Caller
from vault_service.domain.policy import AUDIT_REPORT_ACTIONS
from vault_service.domain.tokens import type_of_token
from vault_service.service.audit_verify import FullAuditReport, who_saw
from vault_service.service.exported_copy import ExportedCopyRefused
from vault_service.service.keyring import KeyManager
from vault_service.service.ports import AuditLog
from vault_service.service.revealing import reveal_hash

Verify = Callable[[float, float], FullAuditReport]
"""`verify(max_copy_lag, seconds)`: the full verification against the vault's own exported copy, its
statements ended after `seconds`; ExportedCopyRefused when the copy cannot be verified against."""
Authorize = Callable[[Caller, str], None]
"""`authorize(caller, report)`: raises (audited) PermissionDenied unless the policy gives `caller` the report."""
Refused = Callable[[Caller, str, VaultError], None]
"""`refused(caller, report, error)`: audits (throttled per peer) a call refused or failed after its authorization."""

MAX_REPORT_SECONDS = 300.0
"""The longest a report may take, whatever its call's deadline: a longer one (a very large log) is made
by the service account's own command (`python -m vault_service.admin audit-verify`)."""
MAX_COPY_LAG_SECONDS = 86_400.0
"""The most a caller may let the exported copy lag: a copy a day behind vouches for little."""
WHO_SAW_ARGUMENT_REFUSED = (
    "who-saw: the argument is not a token (a type prefix such as ip_ or dev_ and 22 characters): nothing looked"
    " for; copy the token whole from user_logins, and for a value, tokenize it first (as the ETL would)"
)


@dataclass(frozen=True)
class WhoSawAnswer:
    """Who-saw's answer: the verification, and the rows naming the token (none unless it verified)."""

    report: FullAuditReport
    records: tuple[AuditRecord, ...]


def _not_audited(caller: Caller, report: str, error: VaultError) -> None:
    """The default `Refused` of unit tests: nothing recorded."""


class AuditReports:
    """Makes the audit reports a client's policy allows, one at a time, each within its deadline, each audited."""

    def __init__(
        self,
        authorize: Authorize,
        verify: Verify,
        audit: AuditLog,
        keys: KeyManager,
        default_copy_lag: float,
        refused: Refused = _not_audited,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._authorize = authorize
        self._verify = verify
        self._audit = audit
        self._keys = keys
        self._default_copy_lag = default_copy_lag
        self._refused = refused
        self._clock = clock
        self._lock = threading.Lock()
        self._running = ""

    def verify(self, caller: Caller, max_copy_lag: float | None, seconds: float | None) -> FullAuditReport:
        """Verify the log for `caller` within `seconds` (None: MAX_REPORT_SECONDS); audited before it returns."""
        self._authorize(caller, "verify")
        report = self._made(caller, "verify", max_copy_lag, seconds)
        outcome = "ok: intact" if report.intact else f"ok: not verified{_from(report)}"
        self._record(caller, "verify", f"{outcome}, {report.rows} record(s)", report.rows)
        return report

    def who_saw(self, caller: Caller, token: str, max_copy_lag: float | None, seconds: float | None) -> WhoSawAnswer:
        """Every reveal and erasure of `token` from the log verified for `caller`; no row unless it verifies.

        The token itself is never kept: its keyed hash goes into the question's own audit row.
        """
        self._authorize(caller, "who-saw")
        token_type = type_of_token(token)
        if token_type is None:  # never repeated anywhere: it may be a value
            self._refuse(caller, "who-saw", InvalidRequest(WHO_SAW_ARGUMENT_REFUSED))
        assert token_type is not None
        report = self._made(caller, "who-saw", max_copy_lag, seconds)
        ring = self._keys.ring
        records = tuple(who_saw(report, ring.audit_keys, token)) if report.intact else ()
        outcome = f"ok: {len(records)} record(s) listed" if report.intact else f"ok: not verified{_from(report)}"
        self._record(caller, "who-saw", outcome, len(records), token_type.type_name, reveal_hash(ring.audit_key, token))
        return WhoSawAnswer(report, records)

    def _made(self, caller: Caller, report: str, max_copy_lag: float | None, seconds: float | None) -> FullAuditReport:
        """The full verification, alone in this process and within `seconds`; refusals and failures audited."""
        lag = self._copy_lag(caller, report, max_copy_lag)
        bound = min(seconds, MAX_REPORT_SECONDS) if seconds is not None else MAX_REPORT_SECONDS
        if bound <= 0:
            self._refuse(caller, report, AuditReportTooLong("the call's deadline had passed before the report began"))
        if not self._lock.acquire(blocking=False):
            self._refuse(
                caller,
                report,
                AuditReportRunning(
                    f"an audit report is being made on this vault already ({self._running}): one at a time;"
                    " retry when it has ended"
                ),
            )
        started = self._clock()
        try:
            self._running = (
                f"{report} for {caller.name!r}{_serial(caller)} since {time.strftime('%H:%M:%S UTC', time.gmtime())}"
            )
            return self._verify(lag, bound)
        except ExportedCopyRefused as error:
            self._refuse(caller, report, AuditCopyRefused(f"the vault's exported checkpoint copy was refused: {error}"))
            raise  # not reached
        except VaultError as failure:
            late = self._clock() - started >= bound
            self._refuse(caller, report, self._too_long(bound) if late else failure)
            raise  # not reached
        finally:
            self._running = ""
            self._lock.release()

    @staticmethod
    def _too_long(bound: float) -> AuditReportTooLong:
        return AuditReportTooLong(
            f"the report did not end within {bound:.0f} s (the call's deadline, at most {MAX_REPORT_SECONDS:.0f} s);"
            " for a log this large, give the call a longer deadline, or run `python -m vault_service.admin"
            " audit-verify` as the service"
        )

    def _copy_lag(self, caller: Caller, report: str, asked: float | None) -> float:
        if asked is None:
            return self._default_copy_lag
        if not math.isfinite(asked) or not 0 <= asked <= MAX_COPY_LAG_SECONDS:
            self._refuse(
                caller,
                report,
                InvalidRequest(f"max copy lag is 0 to {MAX_COPY_LAG_SECONDS:.0f} seconds, not {asked!r}"),
            )
        return asked

    def _refuse(self, caller: Caller, report: str, error: VaultError) -> None:
        """Audit `error` (throttled per peer) and raise it."""
        self._refused(caller, AUDIT_REPORT_ACTIONS[report], error)
        raise error

    def _record(
        self, caller: Caller, report: str, outcome: str, count: int, types: str = "", token_hash: bytes | None = None
    ) -> None:
        revealed = (token_hash,) if token_hash is not None else ()
        event = AuditEvent(
            caller.name,
            AUDIT_REPORT_ACTIONS[report],
            outcome,
            count,
            "",
            types,
            caller.serial,
            caller.cert_sha256,
            revealed,
        )
        self._audit.append(event)


def _from(report: FullAuditReport) -> str:
    """' from record id N' when a record is named, else ''."""
    first = report.finding.first_row if report.finding is not None else 0
    return f" from record id {first}" if first else ""


def _serial(caller: Caller) -> str:
    return f", serial {caller.serial}" if caller.serial else ""
