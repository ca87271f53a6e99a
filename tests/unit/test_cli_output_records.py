"""A table too wide for the terminal is printed as one block of fields per row when asked (W46-11, who-saw)."""

from __future__ import annotations

import io

import pytest

from tokenvault_cli.audit_commands import WHO_SAW_COLUMNS
from tokenvault_cli.output import Format, write_rows

SERIAL = "5f3a9c0e1b2d4f6a8c7e9d0b1a2c3e4f5a6b7c8d"
ROW = (
    1234,
    "2026-12-06 15:09:21.123456+00:00",
    "detokenize",
    "fraud-investigator",
    SERIAL,
    "CASE-2026-0417-FOLLOWUP",
    "ok: 1 revealed, 0 refused; fetch saw records up to 1233",
)


def _printed(columns: int, monkeypatch: pytest.MonkeyPatch, records_when_narrow: bool = True) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(columns))
    out = io.StringIO()
    write_rows(WHO_SAW_COLUMNS, [ROW, ROW], Format.TABLE, out, records_when_narrow=records_when_narrow)
    return out.getvalue().splitlines()


def test_at_80_columns_each_row_is_a_block_of_whole_values(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _printed(80, monkeypatch)
    assert max(len(line) for line in lines) <= 80
    assert [line for line in lines if line.startswith("-[")] == ["-[ 1 of 2 ]", "-[ 2 of 2 ]"]
    assert ["certificate", "serial", SERIAL] in [line.split() for line in lines]
    assert ["client", "fraud-investigator"] in [line.split() for line in lines]
    assert ["when", "(UTC)", "2026-12-06", "15:09:21.123456+00:00"] in [line.split() for line in lines]


def test_a_terminal_wide_enough_keeps_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _printed(220, monkeypatch)
    assert not any(line.startswith("-[") for line in lines)
    assert any(SERIAL in line and "fraud-investigator" in line for line in lines)


def test_other_commands_keep_their_folded_table(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _printed(80, monkeypatch, records_when_narrow=False)
    assert not any(line.startswith("-[") for line in lines) and max(len(line) for line in lines) <= 80
