"""Each refused certificate's first refusals are audited, however long another of its name loops (attack 46, A46-4).

Refusals of a certificate the vault refuses itself are throttled by the client name it carries (b79d311, A45-5), and
names are roles: every analyst's certificate says `analyst`. One revoked analyst certificate in a loop kept
"refused analyst" empty, so every other refused analyst certificate was refused RESOURCE_EXHAUSTED and only counted,
never named in the audit (20 calls, 0 rows). Now each bucket a refused certificate takes from keeps its last
FIRST_REFUSALS items for the first refusals of each certificate (serial), which the loop has spent - while every row
still takes from its name's bucket and from all refused certificates' (A45-5's and A40-1's bounds unchanged).
The integration test (test_refused_certificate_first_refusals.py) runs the whole path through the guard.
"""

from __future__ import annotations

from tests.unit.fakes import FakeAuditLog
from vault_service.domain.audit import AuditEvent
from vault_service.domain.errors import TooManyRequests
from vault_service.domain.rate_limit import BucketMap
from vault_service.service.metering import (
    FIRST_REFUSALS,
    REFUSALS_AUDITED_PER_PEER,
    REFUSED_CERTIFICATES,
    REFUSED_CERTIFICATES_AUDITED,
    THROTTLED_SERIALS_LISTED,
    RefusalAuditor,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _refusal(serial: str) -> AuditEvent:
    return AuditEvent("<anonymous>", "detokenize", "refused: Unauthenticated", 0, client_serial=serial)


def _audited(auditor: RefusalAuditor, peer: str, serial: str) -> bool:
    try:
        auditor.refused(peer, _refusal(serial), REFUSED_CERTIFICATES)
    except TooManyRequests:
        return False
    return True


def _rows(audit: FakeAuditLog, serial: str) -> int:
    return sum(1 for event in audit.events if event.client_serial == serial)


def test_one_looping_refused_certificate_leaves_another_of_its_name_its_first_refusals() -> None:
    audit, clock = FakeAuditLog(), Clock()
    auditor = RefusalAuditor(audit, clock=clock)
    burst = REFUSALS_AUDITED_PER_PEER.burst
    # Alone, a certificate still gets its name's whole burst (A45-5's figures unchanged), then its rate.
    assert sum(_audited(auditor, "refused analyst", "a1") for _ in range(2 * burst)) == burst
    for _ in range(100):  # the former analyst keeps calling, 10 calls every 0.1 s, for 10 s
        clock.now += 0.1
        for _ in range(10):
            _audited(auditor, "refused analyst", "a1")
    # Another revoked analyst certificate, 20 calls over 1 s, the loop going on between them.
    other = []
    for _ in range(20):
        clock.now += 0.05
        for _ in range(5):
            _audited(auditor, "refused analyst", "a1")
        other.append(_audited(auditor, "refused analyst", "b2"))
    assert other[:FIRST_REFUSALS] == [True] * FIRST_REFUSALS, other  # named in the audit at once
    assert _rows(audit, "b2") == FIRST_REFUSALS  # and then throttled like the loop: what is left is its rate
    elapsed = 10 + 20 * 0.05
    assert _rows(audit, "a1") + _rows(audit, "b2") <= burst + REFUSALS_AUDITED_PER_PEER.per_second * elapsed + 1
    # A third certificate of the name, once the reserve has refilled, gets its first refusals too.
    clock.now += 1
    for _ in range(20):  # the loop takes what refilled above the reserve
        _audited(auditor, "refused analyst", "a1")
    third = [_audited(auditor, "refused analyst", "c3") for _ in range(FIRST_REFUSALS + 1)]
    assert third == [True] * FIRST_REFUSALS + [False], third


def test_colluding_names_draining_all_refused_certificates_bucket_leave_a_new_certificate_its_first_refusals() -> None:
    """Two or three names looping at 5/s each can spend all refused certificates' 10/s: a new certificate of any
    name is still named in the audit, and all of them together stay within that bucket's bound."""
    audit, clock = FakeAuditLog(), Clock()
    auditor = RefusalAuditor(audit, clock=clock)
    names = ["refused analyst", "refused fraud-investigator", "refused etl-service"]
    for step in range(200):  # 20 s of three looping certificates, 10 calls each every 0.1 s
        clock.now += 0.1
        for n, name in enumerate(names):
            for _ in range(10):
                _audited(auditor, name, f"loop{n}")
        if step == 150:
            newcomer = [_audited(auditor, "refused privacy-officer", "d4") for _ in range(FIRST_REFUSALS)]
    assert newcomer == [True] * FIRST_REFUSALS
    shared = REFUSED_CERTIFICATES_AUDITED
    assert len(audit.events) <= shared.burst + shared.per_second * 20 + 1, len(audit.events)


def test_many_distinct_refused_certificates_of_one_name_stay_within_its_bound_and_the_map_stays_small() -> None:
    """A40-1's ETL: it mints `etl-service` certificates at will; expired (or revoked), each is a new serial. Each new
    serial's first refusals come from its name's bucket too, so N of them write no more than one name's bound, and
    the buckets of serials are made only for rows written: the map does not grow with the certificates presented."""
    audit, clock = FakeAuditLog(), Clock()
    auditor = RefusalAuditor(audit, clock=clock)
    seconds, per_second = 300, 250
    for step in range(seconds * 10):
        clock.now += 0.1
        for n in range(per_second // 10):  # 250 distinct expired certificates a second, 2 calls each
            serial = f"{step:x}{n:02x}"
            _audited(auditor, "refused etl-service", serial)
            _audited(auditor, "refused etl-service", serial)
    limit = REFUSALS_AUDITED_PER_PEER
    assert len(audit.events) <= limit.burst + limit.per_second * seconds + 1, len(audit.events)
    held = len(auditor)
    print(
        f"{len(audit.events)} rows of {2 * seconds * per_second} refusals of {seconds * per_second} certificates;"
        f" {held} buckets held"
    )
    assert held <= 2 * BucketMap.SWEEP_AT, held


def test_the_row_of_throttled_refusals_names_the_certificates_it_counts_up_to_a_bound() -> None:
    """Beyond their first refusals, the certificates throttled are named in the row that counts them (until attack
    46 that row said `<anonymous>` and a count only), at most THROTTLED_SERIALS_LISTED of them, once each."""
    audit, clock = FakeAuditLog(), Clock()
    auditor = RefusalAuditor(audit, clock=clock)
    for _ in range(100):
        _audited(auditor, "refused analyst", "a1")
    for serial in ("b2", "b2", "c3"):  # the name's bucket and its reserve spent, none refilled: all throttled
        assert not _audited(auditor, "refused analyst", serial)
    (row,) = auditor.flush()
    assert row.client == "<anonymous>" and row.action == "detokenize"
    assert row.outcome.endswith("more refusals, throttled; certificates (serial): a1, b2, c3"), row.outcome
    assert row.item_count == int(row.outcome.split()[1])
    for n in range(THROTTLED_SERIALS_LISTED + 5):
        for _ in range(FIRST_REFUSALS + 1):
            _audited(auditor, "refused analyst", f"e{n:x}")
    written: list[AuditEvent] = []
    auditor.flush_into(written.append)
    (row,) = written
    listed = row.outcome.split("certificates (serial): ", 1)[1]
    assert listed.endswith(", and others") and len(listed.split(", ")) == THROTTLED_SERIALS_LISTED + 1, listed
