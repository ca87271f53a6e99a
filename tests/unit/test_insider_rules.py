"""Pure rules behind the insider guarantees: purposes, limits that fail closed, refusal
throttling, tokenize metering, and the verification of a log against signed checkpoints."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.unit.fakes import FakeAuditLog
from vault_service.domain.audit import GENESIS_HASH, AuditEvent, AuditRecord, chain_hash_v2
from vault_service.domain.checkpoints import ChainHead, Checkpoint, verify_log
from vault_service.domain.errors import InvalidRequest, InvalidValue, RateLimited, TooManyRequests
from vault_service.domain.identity import Caller
from vault_service.domain.policy import DEFAULT_LIMITS, load_policy, parse_policy
from vault_service.domain.purpose import check_purpose
from vault_service.domain.rate_limit import RateLimit, RateLimiter
from vault_service.service.exported_copy import read_exported_copy
from vault_service.service.metering import RefusalAuditor, TokenizeMeter

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "purpose",
    [
        "INC-4821",
        "GDPR-2026-0042",
        "CASE-SWAP-1",
        "CASE-2026-000123",
        "SEC-1290:chargeback-review",
        "DSAR-2026/118#step-2",
        "INC-4821/2026-12-03",
        "GDPR-2026-0042/step-2",
        "GDPR-2026-0042/INC-4821",
        "benchmark",
        "SECOPS-2026-0042/INC-4821/DSAR-0118/CHARGEBACK-REVIEW/STEP-2#a:b",  # 64 characters
    ],
)
def test_case_references_are_good_purposes(purpose: str) -> None:
    check_purpose(purpose)


@pytest.mark.parametrize(
    ("purpose", "why"),
    [
        ("re 203.0.113.7", "IP address"),
        ("re 2001:db8::7", "IP address"),
        ("link-local fe80::1%eth0 seen", "IP address"),
        ("see ip_" + "A" * 22, "token"),
        ("device 567-82-1945", "identifier-like"),
        ("phone 4155550123", "identifier-like"),
        ("mail jo@example.com", "e-mail"),
        ("mac 00:1a:2b:3c:4d:5e", "IP address|hardware"),
        # Spellings an insider tried to smuggle past the first version of the filter:
        ("re 203.000.113.007", "IP address"),
        ("re 203-0-113-7", "IP address"),
        ("re 203 . 0 . 113 . 7", "IP address"),
        ("re 0xCB007107", "IP address"),
        ("re 16909060", "identifier-like"),
        ("re \uff12\uff10\uff13\uff0e\uff10\uff0e\uff11\uff11\uff13\uff0e\uff17", "IP address"),
        ("re 2001-db8--1", "IP address"),
        ("re 567 82 1945", "identifier-like"),
        ("re 567.82.1945", "identifier-like"),
        ("see ip_DtiBLMYRsX_iBcgl FQa_Mg", "token"),
        ("see IP_" + "A" * 22, "token"),
        ("mac aabb.ccdd.eeff", "hardware"),
        # ... and the second round: any separator that is neither a letter nor a digit.
        ("re 203:0:113:7", "IP address"),
        ("re 203|0|113|7", "IP address"),
        ("re 203;0;113;7", "IP address"),
        ("re 203+0+113+7", "IP address"),
        ("re 203\u00b70\u00b7113\u00b77", "IP address"),
        ("re 203\u30020\u3002113\u30027", "IP address"),
        ("ip=203\\0\\113\\7", "IP address"),
        ("re 203 -> 0 -> 113 -> 7", "IP address"),
        ("device 593:47:5928", "identifier-like"),
        ("device 593|47|5928", "identifier-like"),
        # ... and the third: invisible characters inside a group, more separators, words, letters, hex.
        ("re 203.0.1\ufe0f\ufe0f13.7", "IP address"),
        ("re 593-4\ufe0f7-5928", "identifier-like"),
        ("re 203.0.1\u034f13.7", "IP address"),
        ("re 203....0....113....7", "IP address"),
        ("re 203 dot 0 dot 113 dot 7", "IP address"),
        ("re 203o0o113o7", "IP address"),
        ("re 0xcb.0x0.0x71.0x7", "IP address"),
        ("re 0313.0.0161.07", "IP address"),
        ("re 59347-5928", "identifier-like"),
        ("see ip_DtiBLMYR\ufe0fsX_iBcglFQa_Mg", "token"),
        ("", "required"),
        ("X" * 65, "longer"),
    ],
)
def test_purposes_carrying_personal_data_are_refused_saying_why(purpose: str, why: str) -> None:
    with pytest.raises(InvalidRequest, match=why):
        check_purpose(purpose)


def test_a_client_without_limits_gets_the_policy_defaults_and_without_those_the_built_in_ones() -> None:
    policy = parse_policy(
        {
            "defaults": {"limits": {"detokenize_per_second": 3, "detokenize_burst": 6}},
            "clients": {"quiet": {"detokenize": {"ip": "plain"}}, "etl": {"tokenize": ["ip"]}},
        }
    )
    assert policy.permissions("quiet").limits.detokenize == RateLimit(3, 6)
    assert policy.permissions("etl").limits.new_tokens == DEFAULT_LIMITS.new_tokens
    assert policy.permissions("quiet").limits.erase == DEFAULT_LIMITS.erase == policy.default_limits.erase
    limiter = RateLimiter({}, RateLimit(1, 2), clock=lambda: 0.0)
    limiter.take("anyone", 2)
    with pytest.raises(RateLimited):
        limiter.take("anyone", 1)  # not limited by its own entry: by the default


def test_erase_limits_are_read_like_the_others_and_the_shipped_defaults_refuse_a_bulk_wipe() -> None:
    policy = parse_policy(
        {
            "defaults": {"limits": {"erase_per_second": 0.01, "erase_burst": 40}},
            "clients": {"officer": {"erase": ["ip"]}, "bulk": {"erase": ["ip"], "limits": {"erase_per_second": 50}}},
        }
    )
    assert policy.permissions("officer").limits.erase == RateLimit(0.01, 40)
    assert policy.permissions("bulk").limits.erase == RateLimit(50, 50)
    with pytest.raises(InvalidValue, match="erase_per_second must be > 0"):
        parse_policy({"clients": {"officer": {"erase": ["ip"], "limits": {"erase_per_second": 0}}}})
    for shipped in (REPO / "config" / "vault-policy.toml", REPO / "deploy" / "k8s" / "vault-policy.toml"):
        erase = load_policy(shipped).permissions("privacy-officer").limits.erase
        # One person's values at once, a few hundred a day; never a thousand at once or in a day.
        assert 20 <= erase.burst < 1000 and 100 <= erase.per_second * 86400 < 1000, shipped


def test_slow_rates_are_told_per_hour() -> None:
    limiter = RateLimiter({}, RateLimit(0.005, 1), what="erase", clock=lambda: 0.0)
    limiter.take("officer", 1)
    with pytest.raises(RateLimited, match=r"may erase 18 values/hour \(burst 1\); retry in 200.00 s"):
        limiter.take("officer", 1)


def test_refusals_are_written_up_to_the_peer_rate_then_counted_and_refused() -> None:
    audit = FakeAuditLog()
    auditor = RefusalAuditor(audit, RateLimit(per_second=0.001, burst=3))
    event = AuditEvent("stranger", "detokenize", "refused: Unauthenticated", 1)
    for _ in range(3):
        auditor.refused("peer-1", event)
    with pytest.raises(TooManyRequests):
        auditor.refused("peer-1", event)
    auditor.refused("peer-2", event)  # another peer has its own allowance
    assert len(audit.events) == 4
    (summary,) = auditor.flush()
    assert (summary.client, summary.item_count) == ("stranger", 1)
    assert "throttled" in summary.outcome


def test_tokenize_is_audited_in_aggregate_per_client() -> None:
    seen: list[tuple[str, int, int]] = []
    meter = TokenizeMeter(lambda client, values, new: seen.append((client, values, new)))
    etl = Caller("etl-service", "a1", "ff")
    meter.record(etl, 1000, 10)
    meter.record(etl, 500, 0)
    (event,) = meter.flush()
    assert (event.client, event.item_count, event.outcome, event.client_serial) == (
        "etl-service",
        1500,
        "ok: 1500 values, 10 new tokens",
        "a1",
    )
    assert meter.flush() == []
    assert seen == [("etl-service", 1000, 10), ("etl-service", 500, 0)]


def _log(count: int) -> list[AuditRecord]:
    records, prev = [], GENESIS_HASH
    start = datetime(2026, 12, 1, tzinfo=UTC)
    for i in range(1, count + 1):
        event = AuditEvent("analyst", "detokenize", "ok", 1, f"CASE-{i}", "ip", revealed=(bytes([i]) * 16,))
        at = start + timedelta(seconds=i)
        row_hash = chain_hash_v2(prev, i, at, event)
        records.append(AuditRecord(i, at, event, prev, row_hash))
        prev = row_hash
    return records


def _sign(message: bytes) -> str:
    return "sig:" + message.hex()


def _valid(message: bytes, signature: str) -> bool:
    return signature == _sign(message)


def _checkpoint(records: list[AuditRecord], upto: int) -> Checkpoint:
    head = ChainHead(upto, records[upto - 1].row_hash, upto, records[upto - 1].at)
    return Checkpoint(head, "k", _sign(head.message()))


def test_a_log_matching_its_checkpoints_and_exported_copy_verifies() -> None:
    records = _log(6)
    checkpoints = [_checkpoint(records, 3), _checkpoint(records, 6)]
    assert verify_log(records, checkpoints, checkpoints, _valid) is None


def test_a_recomputed_rewrite_is_caught_at_the_first_row_after_the_last_good_checkpoint() -> None:
    records = _log(6)
    checkpoints = [_checkpoint(records, 3), _checkpoint(records, 6)]
    forged, prev = records[:4], records[3].row_hash
    for r in records[4:]:  # row 5 rewritten, every later hash recomputed
        event = dataclasses.replace(r.event, purpose="nothing") if r.record_id == 5 else r.event
        row_hash = chain_hash_v2(prev, r.record_id, r.at, event)
        forged.append(AuditRecord(r.record_id, r.at, event, prev, row_hash))
        prev = row_hash
    finding = verify_log(forged, checkpoints, checkpoints, _valid)
    assert finding is not None and finding.first_row == 4
    assert "signed checkpoint" in finding.reason


def test_a_bad_signature_a_backdated_row_and_a_lost_exported_checkpoint_are_each_caught() -> None:
    records = _log(4)
    good = _checkpoint(records, 4)
    bad = dataclasses.replace(good, signature="sig:00")
    assert verify_log(records, [bad], [], _valid) is not None
    backdated = [*records[:3], dataclasses.replace(records[3], at=records[0].at)]
    assert verify_log(backdated, [], [], _valid) is not None
    finding = verify_log(records[:2], [_checkpoint(records, 2)], [good], _valid)
    assert finding is not None and "no longer has" in finding.reason


def test_exported_checkpoints_are_read_from_the_checkpoint_file_or_the_service_log(tmp_path: Path) -> None:
    checkpoint = _checkpoint(_log(2), 2)
    log_file = tmp_path / "vault_service.log"
    log_file.write_text(
        json.dumps({"message": "serving", "port": 1})
        + "\n"
        + json.dumps({"message": "audit checkpoint", "audit_checkpoint": checkpoint.exported()})
        + "\nnot json\n"
    )
    plain = tmp_path / "checkpoints.jsonl"
    plain.write_text(json.dumps(checkpoint.exported()) + "\n")
    assert list(read_exported_copy(log_file).checkpoints) == [checkpoint] == list(read_exported_copy(plain).checkpoints)
    with pytest.raises(FileNotFoundError):
        read_exported_copy(tmp_path / "missing.jsonl")


def _rechained(records: list[AuditRecord], purpose_of: dict[int, str] | None = None) -> list[AuditRecord]:
    """`records` as the database owner leaves them: purposes rewritten, every hash recomputed."""
    out, prev = [], GENESIS_HASH
    for r in records:
        event = dataclasses.replace(r.event, purpose=(purpose_of or {}).get(r.record_id, r.event.purpose))
        row_hash = chain_hash_v2(prev, r.record_id, r.at, event)
        out.append(AuditRecord(r.record_id, r.at, event, prev, row_hash))
        prev = row_hash
    return out


def test_an_older_exported_checkpoint_catches_a_rewrite_after_the_service_signed_the_rewritten_chain() -> None:
    records = _log(6)
    exported = [_checkpoint(records, 2), _checkpoint(records, 4)]
    forged = _rechained(records, {3: "nothing to see"})
    # The owner deletes the database's checkpoint at 4; the service then signs the rewritten head.
    stored = [exported[0], _checkpoint(forged, 6)]
    exported.append(stored[-1])
    assert verify_log(forged, stored, [], _valid) is None  # the database alone is consistent again
    finding = verify_log(forged, stored, exported, _valid)
    assert finding is not None and finding.first_row == 3
    assert "no longer has" in finding.reason and "no longer match" in finding.reason


def test_rows_deleted_in_the_middle_before_a_restart_are_caught_by_the_older_exported_checkpoints() -> None:
    # After a restart the service counts every row afresh, so its count agrees with a log the
    # owner shortened in the middle (and rechained); only the checkpoints signed before say otherwise.
    records = _log(6)
    exported = [_checkpoint(records, 2), _checkpoint(records, 4)]
    shortened = _rechained([r for r in records if r.record_id != 3])
    head = ChainHead(6, shortened[-1].row_hash, 5, shortened[-1].at)  # 5 rows: the count holds
    resigned = Checkpoint(head, "k", _sign(head.message()))
    stored = [exported[0], resigned]
    assert verify_log(shortened, stored, [], _valid) is None
    finding = verify_log(shortened, stored, [*exported, resigned], _valid)
    assert finding is not None and finding.first_row == 4


def test_an_exported_checkpoint_the_database_lacks_but_the_rows_match_proves_them() -> None:
    # Exported while the database refused checkpoints (one planted ahead): not stored, still true.
    records = _log(6)
    stored = [_checkpoint(records, 2), _checkpoint(records, 6)]
    assert verify_log(records, stored, [_checkpoint(records, 2), _checkpoint(records, 4), stored[1]], _valid) is None
    forged_copy = dataclasses.replace(_checkpoint(records, 4), signature="sig:00")
    finding = verify_log(records, stored, [forged_copy], _valid)
    assert finding is not None and "bad signature" in finding.reason and finding.first_row == 3
    # Another replica's genuine checkpoint of a head the database stored one of: evidence too.
    second = dataclasses.replace(_checkpoint(records, 6), key_name="k2")
    assert verify_log(records, stored, [second], _valid) is None
    rewritten = _rechained(records, {6: "CASE-rewritten"})  # the last row rewritten, its hash recomputed
    finding = verify_log(rewritten, [stored[0]], [second], _valid)  # its stored checkpoint deleted too
    assert finding is not None and finding.first_row == 3 and "no longer match" in finding.reason
