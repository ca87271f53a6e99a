"""Printing results as a table (for people), CSV or JSON (for programs).

What is printed comes from the database and the vault, i.e. from whoever produced the events:
it is data, never instructions. Tables show it as text (no Rich markup; control characters
made visible, so a value cannot move the cursor or hide the rows after it); CSV cells a
spreadsheet would run as a formula get a leading `'` (OWASP's advice on CSV injection), and on
a terminal their control characters are made visible too (attack 18: a row the ETL's role
inserted erased the CSV row above it and wrote to the clipboard), while CSV to a file or a pipe
is exact; JSON is exact (its escapes are ASCII).
"""

from __future__ import annotations

import csv
import enum
import json
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import TextIO

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

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


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet takes a cell to be a formula for (OWASP CSV injection)."""

FORMAT_HELP = (
    "Output format. table: for people; values are shown as text, control characters escaped."
    " csv: a cell that starts with = + - @, a tab or a carriage return gets a leading ' so a"
    " spreadsheet shows it instead of running it as a formula (numbers stay as they are); on a"
    " terminal control characters are escaped too, to a file or a pipe the text is exact."
    " json: every value exactly as stored."
)

FORMAT_OPTION = click.option(
    "--format",
    "-o",
    "fmt",
    type=click.Choice([f.value for f in Format]),
    default=Format.TABLE.value,
    show_default=True,
    help=FORMAT_HELP,
)
"""`-o table|csv|json`, the same on every command that prints rows."""


def _csv_cell(value: object) -> str:
    """The CSV text of a cell; strings a spreadsheet would run as a formula start with `'`."""
    text = _text(value)
    if isinstance(value, int | float | Decimal) or not text.startswith(FORMULA_STARTS):
        return text  # a number (e.g. -3) is no formula; strings, revealed values included, are checked
    return "'" + text


def visible(text: str, keep: str = "") -> str:
    """`text` with every non-printable character (escape, bell, newline, bidi overrides) escaped, as in repr.

    `keep`: unprintable characters left as they are (a message's own line breaks).
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else c.encode("unicode_escape").decode("ascii") for c in text)


def _cell(value: object) -> Text:
    """A table cell: literal text (Rich markup in it is not interpreted)."""
    return Text(visible(_text(value)))


def _jsonable(value: object) -> Cell:
    if isinstance(value, Revealed):
        return value.value
    if isinstance(value, ItemError):
        return None  # why is on stderr; a value column holds values
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # dates, decimals, addresses: their text


def write_rows(
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    fmt: Format,
    out: TextIO | None = None,
    *,
    records_when_narrow: bool = False,
) -> None:
    """Write `rows` under `columns` to `out` (stdout) in `fmt`; tables never cut a value short.

    `records_when_narrow`: when the table would not fit the terminal's width (`COLUMNS` for a file or a
    pipe, 80 by default), each row is printed as a block of its fields, one a line ("field  value"), as
    psql's expanded display does, instead of folding every cell into a column a few characters wide.
    """
    out = out or sys.stdout
    if fmt is Format.CSV:
        writer = csv.writer(out, lineterminator="\n")
        quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)  # csv quotes \r only then
        shown = visible if out.isatty() else str  # a terminal runs controls; a file or a program takes the data
        for cells in ([_csv_cell(name) for name in columns], *([_csv_cell(v) for v in row] for row in rows)):
            cells = [shown(cell) for cell in cells]
            (quoted if any("\r" in cell for cell in cells) else writer).writerow(cells)
    elif fmt is Format.JSON:
        json.dump([dict(zip(columns, map(_jsonable, row), strict=True)) for row in rows], out, indent=2)
        out.write("\n")
    else:
        console = Console(file=out, soft_wrap=False)
        table = Table(show_edge=False, header_style="bold")
        for name in columns:
            table.add_column(_cell(name), overflow="fold")
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        unbounded = console.options.update(max_width=1_000_000)  # a measurement is clamped to its options' width
        if records_when_narrow and rows and Measurement.get(console, unbounded, table).maximum > console.width:
            _print_records(console, columns, rows)
        else:
            console.print(table)


def _print_records(console: Console, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Each row as a block: a heading line, then 'field  value' lines (a long value wraps under itself)."""
    for number, row in enumerate(rows, 1):
        console.print(Text(f"-[ {number} of {len(rows)} ]", style="bold"))
        block = Table.grid(padding=(0, 2))
        block.add_column(no_wrap=True, style="bold")
        block.add_column(overflow="fold")
        for name, value in zip(columns, row, strict=True):
            block.add_row(_cell(name), _cell(value))
        console.print(block)
