"""A round without a pooled connection is an outage only when the database answers no probe (review 19, R19-7).

A server refusing the probe answers: the round fails as the pool exhausted, the tampering alerts
are not held (the rows are not marked unreachable), and the refusal is told - the database owner
keeping the vault out while he holds its pooled connections.
"""

from __future__ import annotations

import logging

import pytest

from tests.unit.fakes import FakeAuditLog
from tests.unit.upkeep_fakes import FakeChainStore, chained_records, upkeep_with
from vault_service.domain.anchoring import AppendedRows, AuditChecksOverdue
from vault_service.domain.database_probe import ProbeAnswer
from vault_service.domain.errors import DatabaseUnreachable
from vault_service.service.metering import TokenizeMeter


@pytest.mark.parametrize("answer", list(ProbeAnswer), ids=[a.value for a in ProbeAnswer])
def test_only_a_probe_no_server_answers_makes_a_round_without_a_pooled_connection_an_outage(
    answer: ProbeAnswer, caplog: pytest.LogCaptureFixture
) -> None:
    records = chained_records(2)
    now = [0.0]
    rows = AppendedRows(max_age=5.0, clock=lambda: now[0])
    rows.remember([(r.record_id, (r.prev_hash, r.row_hash)) for r in records])
    store = FakeChainStore(records)
    failed, refused_probes = list[int](), list[int]()
    upkeep = upkeep_with(
        FakeAuditLog(),
        store,
        TokenizeMeter(),
        [],
        [],
        appended=rows,
        on_failed=lambda: failed.append(1),
        on_probe_refused=lambda: refused_probes.append(1),
    )
    now[0] = 10.0
    store.fail_head = DatabaseUnreachable("the vault database cannot be reached; retry later")
    store.probe_answer = answer
    with caplog.at_level(logging.WARNING):
        upkeep._safely()
    assert failed == [1]
    assert rows.database_unreachable is (answer is ProbeAnswer.SILENT)
    assert refused_probes == ([1] if answer is ProbeAnswer.REFUSED else [])
    assert ("every pooled connection is busy" in caplog.text) is answer.answers
    assert ("refused a connection of the vault's own" in caplog.text) is (answer is ProbeAnswer.REFUSED)
    with pytest.raises(AuditChecksOverdue) as refused:
        rows.check_open()
    assert ("cannot reach the vault's database" in str(refused.value)) is (answer is ProbeAnswer.SILENT)
