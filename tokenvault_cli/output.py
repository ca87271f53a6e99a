"""Printing results as a table (for people), CSV or JSON (for programs)."""

from __future__ import annotations

import csv
import enum
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from rich.console import Console
from rich.table import Table

from tokenvault_client import ItemError, Revealed

Cell = str | int | float | bool | None


class Format(enum.Enum):
    """Output formats."""

    TABLE = "table"
    CSV = "csv"
    JSON = "json"


def _text(value: object) -> str:
    if isinstance(value, Revealed):
        return value.value
    if isinstance(value, ItemError):
        return f"[{value.code.name}]"
    return "" if value is None else str(value)


def _jsonable(value: object) -> Cell:
    if isinstance(value, Revealed):
        return value.value
    if isinstance(value, ItemError):
        return None  # why is on stderr; a value column holds values
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # dates, decimals, addresses: their text


def write_rows(
    columns: Sequence[str], rows: Sequence[Sequence[object]], fmt: Format, out: TextIO | None = None
) -> None:
    """Write `rows` under `columns` to `out` (stdout) in `fmt`; tables never cut a value short."""
    out = out or sys.stdout
    if fmt is Format.CSV:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_text(v) for v in row] for row in rows])
    elif fmt is Format.JSON:
        json.dump([dict(zip(columns, map(_jsonable, row), strict=True)) for row in rows], out, indent=2)
        out.write("\n")
    else:
        table = Table(*columns, show_edge=False, header_style="bold")
        for column in table.columns:
            column.overflow = "fold"
        for row in rows:
            table.add_row(*(_text(v) for v in row))
        Console(file=out, soft_wrap=False).print(table)
