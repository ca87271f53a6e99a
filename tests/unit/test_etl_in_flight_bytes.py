"""The ETL's ledger bounds the bodies it holds, not only their count (chaos 49, C49-6)."""

from __future__ import annotations

import threading

from etl_service.service.inflight import InFlight
from tests.unit.etl_builders import message


def test_no_receive_is_reserved_while_the_bodies_held_reach_the_bound_and_one_is_once_they_settle() -> None:
    ledger = InFlight(2000, floor=2000, max_bytes=1000)
    stop = threading.Event()
    held = [message(i, "x" * 400) for i in range(3)]
    assert ledger.reserve(10, stop, timeout=0)
    ledger.admit(10, held, 60)  # 1,200 characters: past the bound by one receive's
    assert ledger.held_bytes() == 1200 and ledger.held() == 3  # 3 of a count bound of 2,000
    assert not ledger.reserve(10, stop, timeout=0.05)
    ledger.settle(held[:1])
    assert ledger.held_bytes() == 800
    assert ledger.reserve(10, stop, timeout=0)
    ledger.settle(held)  # one settled twice counts once
    assert ledger.held_bytes() == 0 and ledger.held() == 0
