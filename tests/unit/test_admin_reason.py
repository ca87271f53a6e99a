"""An admin command's --reason is kept for good in the audit log: a reference, never personal data."""

from __future__ import annotations

from typing import Any, cast

import pytest

from vault_service.domain.errors import InvalidRequest
from vault_service.entrypoints.admin_cli import main
from vault_service.service.rotation import KeyRotation


@pytest.mark.parametrize(
    ("reason", "why"),
    [
        ("203.0.113.9", "it holds an IP address"),
        ("user SYNTH-00000001-AB asked", "identifier-like number"),
        ("SM-G991B-ATK8Q7ZX", "shape of a device id"),
        ("CHG-ATK8Q7ZX", "shape of a device id"),
        ("rotation after the incident", "must be a case or ticket reference"),
    ],
)
@pytest.mark.parametrize(
    "command", ["rewrap", "rotate-encryption-key", "reencrypt", "rotate-fingerprint-key", "reindex"]
)
def test_a_reason_holding_personal_data_or_no_reference_is_refused_before_anything_is_done(
    command: str, reason: str, why: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VAULT_ADDR", raising=False)  # nothing to reach: the refusal comes first
    with pytest.raises(SystemExit) as refused:
        main([command, "--reason", reason])
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert "--reason" in error and "audit log keeps it for good" in error and why in error
    assert reason not in error  # not repeated to the terminal (or a CI log) either


def test_a_change_ticket_is_a_reason() -> None:
    from vault_service.entrypoints.admin_cli import audit_reason

    assert audit_reason("CHG-1234") == "CHG-1234"
    assert audit_reason("SEC-2026-0042") == "SEC-2026-0042"


class _Audit:
    def __init__(self) -> None:
        self.rows: list[object] = []

    def append(self, event: object) -> None:
        self.rows.append(event)


def test_the_key_jobs_themselves_refuse_such_a_reason_before_any_row_or_work() -> None:
    """Not only the command line: any caller of the key jobs is held to it (review 23, R23-8)."""
    audit = _Audit()
    nothing = cast(Any, None)
    job = KeyRotation(nothing, nothing, nothing, nothing, cast(Any, audit), "admin:test")
    for start in (job.rewrap, job.rotate_encryption_key, job.rotate_fingerprint_key):
        with pytest.raises(InvalidRequest, match="reason refused: the audit log keeps it for good"):
            start("user 198.51.100.7 asked")
    assert audit.rows == []
