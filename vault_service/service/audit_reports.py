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
(as a reveal's row does), never the token, so a later who-saw of that token lists the question,
and the purpose the question was asked for (required, checked as a reveal's).

Reports stream the log through the verification a page at a time, keeping only what the answer
needs (the chain's state, the checkpoints' heads, the erase and data-key records, who-saw's rows):
the log's length costs time, not memory (review 30, R30-1). They are bounded in time: a log of more
rows than TOKENVAULT_AUDIT_REPORT_MAX_ROWS (default 2 500 000: what verifies well within
MAX_REPORT_SECONDS) is refused before it is read (`AuditReportTooLarge`, naming the service account's
command); each client's reports are metered per process (the policy's
audit_reports_per_second / _burst, RateLimited); one at a time per vault process
(`AuditReportRunning`, naming the running one to a caller given `verify` only); each within its
call's deadline, at most MAX_REPORT_SECONDS, and no longer than its caller waits
(`AuditReportTooLong`): the reads' statements end there, the phases between them check, and a
report nobody received is recorded as refused, never as made.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from vault_service.domain.audit import AuditEvent, AuditRecord
from vault_service.domain.crypto import DataKey
from vault_service.domain.errors import (
    AuditCopyRefused,
    AuditReportFailed,
    AuditReportRunning,
    AuditReportTooLarge,
    AuditReportTooLong,
    InvalidRequest,
    VaultError,
)
from vault_service.domain.identity import Caller
from vault_service.domain.policy import AUDIT_REPORT_ACTIONS
from vault_service.domain.purpose import unfit_purpose
from vault_service.domain.tokens import type_of_token
from vault_service.service.audit_verify import FullAuditReport, token_hashes, who_saw
from vault_service.service.exported_copy import (
    MAX_SENT_COPY_BYTES,
    SENT_COPY,
    VAULTS_COPY,
    ExportedCopy,
    ExportedCopyRefused,
    UnreadableExportedCopy,
    sent_exported_copy,
)
from vault_service.service.keyring import KeyManager
from vault_service.service.ports import AuditLog
from vault_service.service.revealing import reveal_hash

log = logging.getLogger(__name__)
_Made = TypeVar("_Made")
CALLER_GONE = "the call ended before the report was made (its deadline passed or its caller went away)"
WHO_SAW_ACTION = AUDIT_REPORT_ACTIONS["who-saw"]
COPY_UNREADABLE = (
    "the vault's exported checkpoint copy (TOKENVAULT_AUDIT_CHECKPOINT_FILE) cannot be read: missing (not"
    " written yet, rotated away, its volume recreated) or unreadable; nothing was verified against it. The"
    " vault's operators find the path in its settings"
)
"""The refusal of a report whose copy file cannot be opened: the server's path is not the caller's to know."""
REPORT_FAILED = (
    "the audit report failed in the vault (its log names the error); nothing was reported: retry, or have the"
    " vault's operators look at its log"
)
"""The refusal of a report that failed on an error no refusal names: audited, never an UNKNOWN status."""

Check = Callable[[], None]
"""`check()`: raises AuditReportTooLong once the report must stop (its deadline passed, its caller went away)."""
Verify = Callable[[float, float, Check, ExportedCopy | None, frozenset[bytes]], FullAuditReport]
"""`verify(max_copy_lag, seconds, check, sent, keep)`: the full verification against the vault's own exported
copy and the copy the caller `sent` too (None: none sent; a copy sent only adds evidence, attack 28 F5), its
statements ended after `seconds`, `check` called before each of its phases and after each page of the log;
keeping of the records only those revealing or erasing a token of the keyed hashes `keep` (who-saw's answer:
the log is streamed, never held); AuditReportTooLarge (before reading the log) for a log over the vault's
bound; ExportedCopyRefused when a copy cannot be verified against."""
Authorize = Callable[[Caller, str], None]
"""`authorize(caller, report)`: raises (audited) PermissionDenied unless the policy gives `caller` the report."""
Refused = Callable[[Caller, str, VaultError], None]
"""`refused(caller, report, error)`: audits (throttled per peer) a call refused or failed after its authorization."""
Budget = Callable[[Caller], None]
"""`budget(caller)`: takes one report from the caller's budget; RateLimited when it has none left."""
ReportsOf = Callable[[Caller], frozenset[str]]
"""`reports_of(caller)`: the reports the policy gives `caller` (asked, never refused nor audited)."""

MAX_REPORT_SECONDS = 300.0
"""The longest a report may take, whatever its call's deadline: a longer one (a very large log) is made
by the service account's own command (`python -m vault_service.admin audit-verify`)."""
MAX_COPY_LAG_SECONDS = 86_400.0
"""The most a caller may let the exported copy lag: a copy a day behind vouches for little."""
WHO_SAW_ARGUMENT_REFUSED = (
    "who-saw: the argument is not a token (a type prefix such as ip_ or dev_ and 22 characters): nothing looked"
    " for; copy the token whole from the request you answer or from user_logins, never a value"
)
SERVICE_ACCOUNT_COMMAND = (
    "have the service account run `python -m vault_service.admin audit-verify` (or `who-saw TOKEN`) where the"
    " vault's settings are (a Kubernetes Job with the vault service's settings: docs/production.md)"
)
"""Where a report too large or too long for the serving vault is made instead."""


def too_large(rows: int, bound: int) -> AuditReportTooLarge:
    """The refusal of a report over a log of `rows` rows, more than `bound`: the count, the bound, the remedy."""
    return AuditReportTooLarge(
        f"the audit log has {rows} rows, more than the {bound} a report made in the serving vault may read (it"
        f" could not verify them within the {MAX_REPORT_SECONDS:.0f} s a report may take;"
        " TOKENVAULT_AUDIT_REPORT_MAX_ROWS): nothing was read; " + SERVICE_ACCOUNT_COMMAND
    )


@dataclass(frozen=True)
class WhoSawAnswer:
    """Who-saw's answer: the verification, and the rows naming the token (none unless it verified)."""

    report: FullAuditReport
    records: tuple[AuditRecord, ...]


def _not_audited(caller: Caller, report: str, error: VaultError) -> None:
    """The default `Refused` of unit tests: nothing recorded."""


def _unmetered(caller: Caller) -> None:
    """The default `Budget` of unit tests: no limit."""


def _every_report(caller: Caller) -> frozenset[str]:
    """The default `ReportsOf` of unit tests: every report."""
    return frozenset(AUDIT_REPORT_ACTIONS)


def _still_wanted() -> bool:
    """The default `cancelled` of a call: never."""
    return False


class AuditReports:
    """Makes the audit reports a client's policy allows, one at a time, each metered, within its deadline, audited."""

    def __init__(
        self,
        authorize: Authorize,
        verify: Verify,
        audit: AuditLog,
        keys: KeyManager,
        default_copy_lag: float,
        refused: Refused = _not_audited,
        clock: Callable[[], float] = time.monotonic,
        budget: Budget = _unmetered,
        reports_of: ReportsOf = _every_report,
    ) -> None:
        self._authorize = authorize
        self._verify = verify
        self._audit = audit
        self._keys = keys
        self._default_copy_lag = default_copy_lag
        self._refused = refused
        self._clock = clock
        self._budget = budget
        self._reports_of = reports_of
        self._lock = threading.Lock()
        self._running = ""

    def verify(
        self,
        caller: Caller,
        max_copy_lag: float | None,
        seconds: float | None,
        cancelled: Callable[[], bool] = _still_wanted,
        copy: bytes | None = None,
    ) -> FullAuditReport:
        """Verify the log for `caller` within `seconds` (None: MAX_REPORT_SECONDS); audited before it returns.

        `cancelled()`: True once the caller went away (or its call ended): the report stops there.
        `copy`: the text of an exported copy the caller holds (the shipped log's checkpoint lines, at
        most MAX_SENT_COPY_BYTES), verified against together with the vault's own copy file when it has
        one, never instead of it (attack 28, F5; review 30, R30-4: a vault without a copy file checks
        none). A malformed copy is refused INVALID_ARGUMENT naming its line, on the record (attack 28, F1).
        """
        self._authorize(caller, "verify")
        if copy is not None and len(copy) > MAX_SENT_COPY_BYTES:
            self._refuse(
                caller,
                "verify",
                InvalidRequest(
                    f"the copy sent is {len(copy)} bytes, over {MAX_SENT_COPY_BYTES}: send its newest checkpoint"
                    " lines only (`grep 'audit checkpoint'`, the last hours)"
                ),
            )
        report = self._made(caller, "verify", max_copy_lag, seconds, cancelled, frozenset, lambda made: made, copy)
        outcome = "ok: intact" if report.intact else f"ok: not verified{_from(report)}"
        self._record(caller, "verify", f"{outcome}, {report.rows} record(s)", report.rows)
        return report

    def who_saw(
        self,
        caller: Caller,
        token: str,
        max_copy_lag: float | None,
        seconds: float | None,
        cancelled: Callable[[], bool] = _still_wanted,
        purpose: str = "",
    ) -> WhoSawAnswer:
        """Every reveal and erasure of `token` from the log verified for `caller`; no row unless it verifies.

        `purpose` is required and kept in the question's row, as a reveal's (DESIGN §1b: every call of
        the privacy officer audited with its purpose, here the access request it answers; review 30,
        R30-9): a short reference such as DSAR-2026-0042, refused (audited, without it) when it is
        not one or holds a token or personal data (`check_purpose`).
        The token itself is never kept: its keyed hash goes into the question's own audit row. Earlier
        who-saw questions about the token are listed only to a caller also given `verify` (the security
        team): whom the team is looking into is not the privacy officer's to learn (review 30, R30-5).
        """
        self._authorize(caller, "who-saw")
        token_type = type_of_token(token)
        if token_type is None:  # never repeated anywhere: it may be a value
            self._refuse(caller, "who-saw", InvalidRequest(WHO_SAW_ARGUMENT_REFUSED))
        unfit = unfit_purpose(purpose)
        if unfit is not None:
            self._refuse(caller, "who-saw", InvalidRequest(f"who-saw: {unfit}"))
        questions = "verify" in self._reports_of(caller)
        audit_keys: list[DataKey] = []  # one set of keys for what is kept and what is listed, taken as it begins

        def keep() -> frozenset[bytes]:
            audit_keys[:] = self._keys.ring.audit_keys
            return token_hashes(audit_keys, token)

        def listed(report: FullAuditReport) -> WhoSawAnswer:
            found = who_saw(report, audit_keys, token) if report.verified else []  # marked when after an erasure
            return WhoSawAnswer(report, tuple(r for r in found if questions or r.event.action != WHO_SAW_ACTION))

        answer = self._made(caller, "who-saw", max_copy_lag, seconds, cancelled, keep, listed)
        report, records, ring = answer.report, answer.records, self._keys.ring
        outcome = f"ok: {len(records)} record(s) listed" if report.verified else f"ok: not verified{_from(report)}"
        self._record(
            caller,
            "who-saw",
            outcome,
            len(records),
            token_type.type_name,
            reveal_hash(ring.audit_key, token),
            purpose,
        )
        return answer

    def _made(
        self,
        caller: Caller,
        report: str,
        max_copy_lag: float | None,
        seconds: float | None,
        cancelled: Callable[[], bool],
        keep: Callable[[], frozenset[bytes]],
        then: Callable[[FullAuditReport], _Made],
        copy: bytes | None = None,
    ) -> _Made:
        """`then` of the full verification, alone in this process, metered, within `seconds`; refusals audited.

        Of the records read, the verification keeps only those of the tokens hashed in `keep()`.

        The report stops at the first check after its deadline or its caller's going away (between
        its phases), and a report made but no longer wanted then is recorded as refused
        (AuditReportTooLong), never as made: nobody received its answer (review 30, R30-3).
        """
        lag = self._copy_lag(caller, report, max_copy_lag)
        bound = min(seconds, MAX_REPORT_SECONDS) if seconds is not None else MAX_REPORT_SECONDS
        if bound <= 0:
            self._refuse(caller, report, AuditReportTooLong("the call's deadline had passed before the report began"))
        if not self._lock.acquire(blocking=False):
            self._refuse(caller, report, self._one_at_a_time(caller))
        started = self._clock()

        def check() -> None:
            if cancelled():
                raise AuditReportTooLong(CALLER_GONE)
            if self._clock() - started >= bound:
                raise self._too_long(bound)

        try:
            self._budget(caller)  # after the lock: a call refused for another's report spends nothing
            self._running = (
                f"{report} for {caller.name!r}{_serial(caller)} since {time.strftime('%H:%M:%S UTC', time.gmtime())}"
            )
            sent = sent_exported_copy(copy) if copy is not None else None
            made = then(self._verify(lag, bound, check, sent, keep()))
            check()
            return made
        except ExportedCopyRefused as error:
            sent_one = getattr(error, "path", VAULTS_COPY) == SENT_COPY
            whose = "the exported checkpoint copy sent" if sent_one else "the vault's exported checkpoint copy"
            refused: VaultError = AuditCopyRefused(f"{whose} was refused: {error}")
            if sent_one and isinstance(error, UnreadableExportedCopy):  # the caller's argument is malformed
                refused = InvalidRequest(f"{whose} was refused: {error}")
            self._refuse(caller, report, refused)
        except OSError as error:  # the file missing or unreadable: named by the vault's log, never to the caller
            log.warning("audit report refused: the exported checkpoint copy cannot be read: %s", error)
            self._refuse(caller, report, AuditCopyRefused(COPY_UNREADABLE))
        except VaultError as failure:
            self._refuse(caller, report, self._ended(failure, cancelled, started, bound))
        except Exception as error:  # never UNKNOWN and unaudited (attack 28, F1): refused, on the record
            log.exception("audit report failed (%s)", type(error).__name__)
            self._refuse(caller, report, AuditReportFailed(REPORT_FAILED))
        finally:
            self._running = ""
            self._lock.release()

    def _ended(self, failure: VaultError, cancelled: Callable[[], bool], started: float, bound: float) -> VaultError:
        """What a failed report is refused as: AuditReportTooLong once its call had ended, else `failure`.

        A report's statement is cancelled when its call ends (audit_report_session.py): the driver's
        error then is the call's end, recorded as such.
        """
        if isinstance(failure, AuditReportTooLong):
            return failure
        if cancelled():
            return AuditReportTooLong(CALLER_GONE)
        return self._too_long(bound) if self._clock() - started >= bound else failure

    def _one_at_a_time(self, caller: Caller) -> AuditReportRunning:
        """The refusal of a report while another runs: naming it only to a caller given `verify` (R30-5)."""
        running = f" ({self._running})" if "verify" in self._reports_of(caller) else ""
        return AuditReportRunning(
            f"an audit report is being made on this vault already{running}: one at a time; retry when it has ended"
        )

    @staticmethod
    def _too_long(bound: float) -> AuditReportTooLong:
        return AuditReportTooLong(
            f"the report did not end within {bound:.0f} s (the call's deadline, at most {MAX_REPORT_SECONDS:.0f} s);"
            " for a log this large, give the call a longer deadline, or " + SERVICE_ACCOUNT_COMMAND
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

    def _refuse(self, caller: Caller, report: str, error: VaultError) -> NoReturn:
        """Audit `error` (throttled per peer) and raise it."""
        self._refused(caller, AUDIT_REPORT_ACTIONS[report], error)
        raise error

    def _record(
        self,
        caller: Caller,
        report: str,
        outcome: str,
        count: int,
        types: str = "",
        token_hash: bytes | None = None,
        purpose: str = "",
    ) -> None:
        revealed = (token_hash,) if token_hash is not None else ()
        event = AuditEvent(
            caller.name,
            AUDIT_REPORT_ACTIONS[report],
            outcome,
            count,
            purpose,
            types,
            caller.serial,
            caller.cert_sha256,
            revealed,
        )
        self._audit.append(event)


def _from(report: FullAuditReport) -> str:
    """' from record id N' when a record is named, else ''."""
    first = report.finding.first_row if report.finding is not None else 0
    if not first and report.verified and report.reveals_after_erasure:  # attack 41, A41-2
        return f" from record id {report.reveals_after_erasure[0]}: a reveal after an erasure of the same token"
    if not first and report.verified and report.schema_changes:  # attack 43, A43-4/A43-5
        return ": the vault schema differs from its migrations"
    return f" from record id {first}" if first else ""


def _serial(caller: Caller) -> str:
    return f", serial {caller.serial}" if caller.serial else ""
