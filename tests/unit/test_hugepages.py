"""Reserving and giving back the kernel's huge pages (a file stands in for /proc/sys/vm/nr_hugepages)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

from devstack.hugepages import huge_page_bytes, release, reserve


def control_file(tmp_path: Path, pages: int) -> Path:
    control = tmp_path / "nr_hugepages"
    control.write_text(f"{pages}\n")
    return control


def test_reserve_adds_to_what_the_host_already_reserved_and_release_takes_only_that_back(tmp_path: Path) -> None:
    control = control_file(tmp_path, 100)
    added = reserve(2100, control)
    assert added == 2100
    assert int(control.read_text()) == 2200
    control.write_text("2300\n")  # another cluster reserved its own meanwhile
    release(added, control)
    assert int(control.read_text()) == 200


def test_nothing_to_reserve_changes_nothing(tmp_path: Path) -> None:
    control = control_file(tmp_path, 7)
    assert reserve(0, control) == 0
    release(0, control)
    assert int(control.read_text()) == 7


def test_a_reservation_that_cannot_be_made_reports_none_and_release_never_goes_below_zero(tmp_path: Path) -> None:
    assert reserve(2100, tmp_path / "missing" / "nr_hugepages") == 0
    control = control_file(tmp_path, 5)
    release(2100, control)
    assert int(control.read_text()) == 0


def test_a_process_on_4_kb_pages_has_no_huge_page_bytes() -> None:
    assert huge_page_bytes(os.getpid()) == 0
    assert huge_page_bytes(2**22 + 12345) == 0  # no such process


class KernelWithMemoryFor:
    """nr_hugepages of a kernel that finds memory for at most `limit` huge pages."""

    def __init__(self, pages: int, limit: int) -> None:
        self.pages, self.limit = pages, limit

    def read_text(self) -> str:
        return f"{self.pages}\n"

    def write_text(self, text: str) -> None:
        self.pages = min(int(text), self.limit)


def test_a_reservation_the_kernel_can_only_partly_make_is_given_back_at_once() -> None:
    kernel = KernelWithMemoryFor(pages=10, limit=1000)
    assert reserve(2100, cast(Path, kernel)) == 0
    assert kernel.pages == 10
    assert reserve(900, cast(Path, kernel)) == 900
    assert kernel.pages == 910
