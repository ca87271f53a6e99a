"""Where key rotation stands, as `tokenvault status` and the vault's admin `status` print it.

One text for both: the client's KeyStatus (asked of the vault over KeyJobs) and the service's
RotationStatus (read in the operator's process) have the same fields; each caller passes its own
console (the command line's prints data never as markup; the admin command's is rich's default).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rich.console import Console
from rich.table import Table


class _DataKey(Protocol):
    @property
    def key_id(self) -> int: ...
    @property
    def purpose(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def kek_version(self) -> int: ...
    def unwraps_under(self, min_decryption_version: int) -> bool: ...


class _Described(Protocol):
    def describe(self) -> str: ...


class _Standing(Protocol):
    """What the status text reads: tokenvault_client.KeyStatus and the service's RotationStatus both are one."""

    @property
    def keys(self) -> Sequence[_DataKey]: ...
    @property
    def kek_latest_version(self) -> int: ...
    @property
    def kek_min_decryption_version(self) -> int: ...
    @property
    def rows_to_reencrypt(self) -> int: ...
    @property
    def rows_to_reindex(self) -> int: ...
    @property
    def rows_to_compact(self) -> int: ...
    @property
    def safe_min_decryption_version(self) -> int: ...
    @property
    def interrupted(self) -> Sequence[_Described]: ...
    @property
    def unpaired_outcomes(self) -> Sequence[_Described]: ...


def print_key_status(status: _Standing, console: Console) -> None:
    """The data keys and where rotation stands, on `console`."""
    table = Table("key", "purpose", "state", "wrapped with KEK version")
    retired_below = status.kek_min_decryption_version
    for key in status.keys:
        gone = "" if key.unwraps_under(retired_below) else " (below the minimum)"
        table.add_row(str(key.key_id), key.purpose, key.state, f"v{key.kek_version}{gone}")
    console.print(table)
    console.print(f"KEK latest version            : v{status.kek_latest_version}")
    console.print(f"KEK min_decryption_version    : v{retired_below} (versions below it retired in Transit)")
    if any(not key.unwraps_under(retired_below) for key in status.keys):
        console.print("  a key 'below the minimum' no longer unwraps (retire-kek-versions retired its version)")
    console.print(f"values to re-encrypt          : {status.rows_to_reencrypt}")
    console.print(f"fingerprints to re-index      : {status.rows_to_reindex}")
    console.print(f"fingerprints to compact       : {status.rows_to_compact}")
    safe = status.safe_min_decryption_version
    console.print(f"safe min_decryption_version   : {safe}")
    if safe < status.kek_latest_version:
        console.print("  run `rewrap` first to allow raising it to the latest version")
    for job in status.interrupted:
        console.print(
            f"INTERRUPTED: {job.describe()}: its process ended before its outcome (no live process holds it);"
            " the next key command appends its outcome row `failed: interrupted`; a reencrypt or reindex run again"
            " resumes (the work left is above)",
            markup=False,
        )

    for row in status.unpaired_outcomes:
        console.print(
            f"UNPAIRED OUTCOME: {row.describe()}: the vault writes one outcome row per intent row, so this one was"
            " appended by someone else (the serving role can append rows) or twice: read both rows and the"
            " intent row, and who holds the serving role's credentials",
            markup=False,
        )
