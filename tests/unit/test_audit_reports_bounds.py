"""The vault's audit reports (AuditReports) are bounded: the copy lag a caller allows, one at a time, the deadline."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from vault_service.domain.errors import AuditReportRunning, AuditReportTooLong, InvalidRequest, VaultError
from vault_service.domain.identity import Caller
from vault_service.service.audit_reports import MAX_REPORT_SECONDS, AuditReports

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
        _reports(lambda lag, seconds: read.append(lag), refused).verify(SECURITY, lag, 30.0)

    assert read == [] and refused.seen == [("audit-verify", "InvalidRequest")]


def test_the_report_gets_the_calls_deadline_capped_at_the_vaults_own_bound() -> None:
    asked: list[tuple[float, float]] = []

    def verify(lag: float, seconds: float) -> Any:
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

    def verify(lag: float, seconds: float) -> Any:
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
            reports.who_saw(SECURITY, "ip_" + "A" * 22, None, 5.0)
    finally:
        release.set()
        first.join(5)
    assert ("who-saw", "AuditReportRunning") in refused.seen
