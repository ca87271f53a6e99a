"""The vault's audit reports (AuditReports) are bounded: the copy lag a caller allows, one at a time, the deadline,
the caller's going away, each client's budget; a copy file that cannot be read is refused on the record."""

from __future__ import annotations

import math
import threading
from types import SimpleNamespace
from typing import Any, cast

import pytest

from vault_service.domain.errors import (
    AuditCopyRefused,
    AuditReportRunning,
    AuditReportTooLong,
    InvalidRequest,
    RateLimited,
    StorageError,
    VaultError,
)
from vault_service.domain.identity import Caller
from vault_service.service.audit_reports import MAX_REPORT_SECONDS, AuditReports
from vault_service.service.exported_copy import MAX_SENT_COPY_BYTES

SECURITY = Caller("security-team", "1a", "ab" * 32)


class _Refusals:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, caller: Caller, action: str, error: VaultError) -> None:
        self.seen.append((action, type(error).__name__))


def _reports(verify: Any, refused: _Refusals) -> AuditReports:
    allow = lambda caller, report: None  # noqa: E731 - the policy allows it
    return AuditReports(allow, verify, audit=None, keys=None, default_copy_lag=10.0, refused=refused)  # type: ignore[arg-type]


@pytest.mark.parametrize("lag", [-1.0, 86_401.0, math.nan, math.inf])
def test_a_copy_lag_out_of_bounds_is_refused_on_the_record_before_anything_is_read(lag: float) -> None:
    refused = _Refusals()
    read: list[float] = []

    with pytest.raises(InvalidRequest, match="max copy lag is 0 to 86400 seconds"):
        _reports(lambda lag, seconds, check, sent, keep: read.append(lag), refused).verify(SECURITY, lag, 30.0)

    assert read == [] and refused.seen == [("audit-verify", "InvalidRequest")]


def test_the_report_gets_the_calls_deadline_capped_at_the_vaults_own_bound() -> None:
    asked: list[tuple[float, float]] = []

    def verify(lag: float, seconds: float, check: Any, sent: Any, keep: Any) -> Any:
        asked.append((lag, seconds))
        raise AuditReportTooLong("stop here")

    reports = _reports(verify, _Refusals())
    for deadline in (12.0, None, 10_000.0):
        with pytest.raises(AuditReportTooLong):
            reports.verify(SECURITY, None, deadline)

    assert asked == [(10.0, 12.0), (10.0, MAX_REPORT_SECONDS), (10.0, MAX_REPORT_SECONDS)]


def test_a_second_report_while_one_is_made_is_refused_naming_it() -> None:
    started, release = threading.Event(), threading.Event()
    refused = _Refusals()

    def verify(lag: float, seconds: float, check: Any, sent: Any, keep: Any) -> Any:
        started.set()
        release.wait(5)
        raise AuditReportTooLong("released")

    reports = _reports(verify, refused)

    def first_report() -> None:
        with pytest.raises(AuditReportTooLong):
            reports.verify(SECURITY, None, 5.0)

    first = threading.Thread(target=first_report)
    first.start()
    started.wait(5)
    try:
        with pytest.raises(AuditReportRunning, match="verify for 'security-team', serial 1a since"):
            reports.who_saw(SECURITY, "ip_" + "A" * 22, None, 5.0, purpose="CASE-1")
    finally:
        release.set()
        first.join(5)
    assert ("who-saw", "AuditReportRunning") in refused.seen


NOTHING: Any = None
"""What a report refused or ended before its row never uses (the keys, the audit log)."""


def _made_report() -> Any:
    """A report as made (only what the audit row reads of it)."""
    return SimpleNamespace(intact=True, rows=3, finding=None)


class _Rows:
    def __init__(self) -> None:
        self.appended: list[str] = []

    def append(self, event: Any) -> None:
        self.appended.append(event.outcome)


def test_a_report_whose_caller_went_away_is_recorded_refused_never_made() -> None:
    refused, rows = _Refusals(), _Rows()
    gone, calls = [False], [0]

    def verify(lag: float, seconds: float, check: Any, sent: Any, keep: Any) -> Any:
        check()  # still wanted here
        calls[0] += 1
        gone[0] = calls[0] == 1  # the first call's caller cancels while the log is verified
        return _made_report()

    reports = AuditReports(
        lambda caller, report: None,
        verify,
        cast(Any, rows),
        NOTHING,
        10.0,
        refused=refused,
    )
    with pytest.raises(AuditReportTooLong, match="its caller went away"):
        reports.verify(SECURITY, None, 30.0, lambda: gone[0])

    assert rows.appended == [] and refused.seen == [("audit-verify", "AuditReportTooLong")]
    gone[0] = False
    assert reports.verify(SECURITY, None, 30.0, lambda: gone[0]).intact  # the one report at a time is free again


def test_a_copy_file_that_cannot_be_opened_is_refused_on_the_record_without_its_path() -> None:
    refused = _Refusals()

    def verify(lag: float, seconds: float, check: Any, sent: Any, keep: Any) -> Any:
        raise FileNotFoundError("no exported checkpoints at /srv/secret/checkpoints.jsonl")

    with pytest.raises(AuditCopyRefused) as error:
        _reports(verify, refused).verify(SECURITY, None, 30.0)

    assert "/srv" not in str(error.value) and "cannot be read" in str(error.value)
    assert refused.seen == [("audit-verify", "AuditCopyRefused")]


def test_a_client_over_its_report_budget_is_refused_on_the_record_and_frees_the_slot() -> None:
    refused, asked = _Refusals(), [0]

    def budget(caller: Caller) -> None:
        asked[0] += 1
        if asked[0] == 1:
            raise RateLimited("no report left", retry_after=300.0)

    reports = AuditReports(
        lambda caller, report: None,
        lambda lag, seconds, check, sent, keep: _made_report(),
        cast(Any, _Rows()),
        NOTHING,
        10.0,
        refused=refused,
        budget=budget,
    )
    with pytest.raises(RateLimited):
        reports.verify(SECURITY, None, 30.0)
    assert reports.verify(SECURITY, None, 30.0).intact
    assert refused.seen == [("audit-verify", "RateLimited")]


def test_the_running_report_is_named_only_to_a_caller_given_verify() -> None:
    started, release = threading.Event(), threading.Event()

    def verify(lag: float, seconds: float, check: Any, sent: Any, keep: Any) -> Any:
        started.set()
        release.wait(5)
        raise AuditReportTooLong("released")

    officer = Caller("privacy-officer", "2b", "cd" * 32)
    reports = AuditReports(
        lambda caller, report: None,
        verify,
        NOTHING,
        NOTHING,
        10.0,
        reports_of=lambda caller: frozenset({"who-saw"}) if caller is officer else frozenset({"verify", "who-saw"}),
    )

    def first_report() -> None:
        with pytest.raises(AuditReportTooLong):
            reports.verify(SECURITY, None, 5.0)

    first = threading.Thread(target=first_report)
    first.start()
    started.wait(5)
    try:
        with pytest.raises(AuditReportRunning) as refused:
            reports.who_saw(officer, "ip_" + "A" * 22, None, 5.0, purpose="DSAR-1")
    finally:
        release.set()
        first.join(5)
    assert "security-team" not in str(refused.value) and "1a" not in str(refused.value)


def test_a_statement_cancelled_because_its_caller_went_away_is_recorded_as_that() -> None:
    refused = _Refusals()

    def verify(lag: float, seconds: float, check: Any, sent: Any, keep: Any) -> Any:
        raise StorageError("canceling statement due to user request")  # the watch cancelled it

    with pytest.raises(AuditReportTooLong, match="its caller went away"):
        _reports(verify, refused).verify(SECURITY, None, 30.0, lambda: True)
    assert refused.seen == [("audit-verify", "AuditReportTooLong")]


def test_a_copy_sent_over_its_bound_is_refused_on_the_record_before_anything_is_read() -> None:
    refused, read = _Refusals(), []

    with pytest.raises(InvalidRequest, match="send its newest checkpoint lines only"):
        _reports(lambda lag, seconds, check, sent, keep: read.append(sent), refused).verify(
            SECURITY, None, 30.0, copy=b"x" * (MAX_SENT_COPY_BYTES + 1)
        )

    assert read == [] and refused.seen == [("audit-verify", "InvalidRequest")]
