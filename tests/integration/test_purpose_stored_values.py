"""A purpose naming a value stored in the vault, of another call, is withheld (attack 14, finding 3).

The comparison with the call's own values (test_purpose_own_values.py) did not reach a value the
call does not name: an erasure the erase burst splits into calls kept `GDPR-2026-801-<device id>`
in the ip call's row, and the device id outlived its own erasure in the audit log; an analyst's
masked reveal of an ip with `INC-<device id>` kept it too. The vault now looks the values a kept
purpose could name up among its stored values (by the keyed fingerprint Tokenize uses) and
withholds the purpose on a hit: the call is served as before, never refused (that would tell the
caller the value is stored).
"""

from __future__ import annotations

import uuid

import psycopg

from tests.integration.audit_rows import audit_rows_since, last_audit_id
from tests.integration.purpose_values import (
    DEVICE,
    IP_TYPE,
    StubFor,
    audit_rows_holding,
    benchmarking_ip,
    erase_split_in_two,
    letters_device_id,
    tokenized,
)
from tokenvault_api.v1 import vault_pb2
from vault_service.adapters.postgres import tokens as tokens_module
from vault_service.domain.purpose import may_hold_a_token, token_ids_in, unfit_purpose


def test_an_erasure_split_into_two_calls_leaves_the_device_id_in_no_audit_row(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    erasure = erase_split_in_two(stack_env, stub_for, device_first=False)
    assert erasure.erased == [True, True]
    assert erasure.officer_rows == [
        ("erase", "ok: 1 erased, 0 not erased", ""),
        ("erase", "ok: 1 erased, 0 not erased", ""),
    ]
    assert audit_rows_holding(stack_env, erasure.device) == 0, "an audit row holds the erased device id"


def test_a_masked_reveal_of_an_ip_naming_a_stored_device_keeps_none_of_the_device(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    device = letters_device_id()
    ip_token, _ = tokenized(stub_for, [(IP_TYPE, benchmarking_ip()), (DEVICE, device)])
    before = last_audit_id(stack_env)
    reveal = vault_pb2.DetokenizeRequest(tokens=[ip_token], purpose=f"INC-{device}")
    (result,) = stub_for("analyst").Detokenize(reveal, timeout=10).results
    assert result.WhichOneof("result") == "value"  # served as with any other purpose
    # The device's run withheld, the reference kept (insider round 16, #2: not the whole purpose).
    assert audit_rows_since(stack_env, before, "analyst") == [
        ("detokenize", "ok: 1 revealed, 0 refused", "INC-(withheld)")
    ]
    assert audit_rows_holding(stack_env, device) == 0, "an audit row holds the device id"


def test_short_device_ids_and_an_ip_a_producer_sent_blank_no_reference(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    # Review 15, finding 1: every group of a purpose was looked up as a device id and its hex halves
    # as an ip, so a producer sending `INC`, `2026`, `GDPR` blanked nearly every later purpose, and
    # GDPR-2026-0042 read as 32.38.0.66. Only serial-shaped runs and whole addresses are looked up.
    poison = [(DEVICE, value) for value in ("INC", "2026", "GDPR", "GDPR-2026", "0042", "4821")]
    other_ip = benchmarking_ip()
    ip_token, *_ = tokenized(
        stub_for, [(IP_TYPE, benchmarking_ip()), *poison, (IP_TYPE, "32.38.0.66"), (IP_TYPE, other_ip)]
    )
    hex_ip = "".join(f"{int(octet):02x}" for octet in other_ip.split("."))
    references = ("GDPR-2026-0042", "INC-4821", f"INC-{hex_ip}")
    analyst = stub_for("analyst")
    before = last_audit_id(stack_env)
    for purpose in references:
        analyst.Detokenize(vault_pb2.DetokenizeRequest(tokens=[ip_token], purpose=purpose), timeout=10)
    # The last is another call's ip in hex, kept: a number reading of a group is compared with the
    # call's own values only (docs/threat-model.md says what that gives up).
    assert audit_rows_since(stack_env, before, "analyst") == [
        ("detokenize", "ok: 1 revealed, 0 refused", purpose) for purpose in references
    ]


def test_a_device_id_stored_in_lower_case_is_found_written_in_upper_case(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    # Review 15, finding 4: an Android id is stored as 16 lower-case hex digits.
    n = uuid.uuid4().int
    android_id = "dcfabeeb9acd" + "".join("abcdef"[(n >> (3 * i)) % 6] for i in range(4))
    ip_token, _ = tokenized(stub_for, [(IP_TYPE, benchmarking_ip()), (DEVICE, android_id)])
    before = last_audit_id(stack_env)
    reveal = vault_pb2.DetokenizeRequest(tokens=[ip_token], purpose=f"INC-{android_id.upper()}")
    stub_for("analyst").Detokenize(reveal, timeout=10)
    assert audit_rows_since(stack_env, before, "analyst") == [
        ("detokenize", "ok: 1 revealed, 0 refused", "INC-(withheld)")
    ]
    assert audit_rows_holding(stack_env, android_id) == 0


def test_a_token_of_another_call_split_by_dots_is_withheld(stack_env: dict[str, str], stub_for: StubFor) -> None:
    # Attack 14, finding 7, other half: the call's own tokens are refused; another call's token is
    # found by looking the purpose's 22-character windows up as token ids.
    for _ in range(50):
        ip_token, device_token = tokenized(stub_for, [(IP_TYPE, benchmarking_ip()), (DEVICE, letters_device_id())])
        body = device_token.removeprefix("dev_")
        if "-" not in body and "_" not in body and sum(c.isdigit() for c in body) <= 3:
            break  # its pieces are groups of a reference, and no number detector fires
    purpose = "INC-" + ".".join([body[:8], body[8:16], body[16:]])
    before = last_audit_id(stack_env)
    reveal = vault_pb2.DetokenizeRequest(tokens=[ip_token], purpose=purpose)
    (result,) = stub_for("analyst").Detokenize(reveal, timeout=10).results
    assert result.WhichOneof("result") == "value"
    assert audit_rows_since(stack_env, before, "analyst") == [("detokenize", "ok: 1 revealed, 0 refused", "")]
    assert audit_rows_holding(stack_env, body[8:16]) == 0, "an audit row holds a piece of the token"


def _scan_loops(plan: dict[str, object]) -> list[int]:
    """The loops of each scan of vault.tokens in an EXPLAIN (ANALYZE, FORMAT JSON) plan node and below."""
    loops = [int(str(plan.get("Actual Loops", 0)))] if plan.get("Relation Name") == "tokens" else []
    for child in plan.get("Plans", []):  # type: ignore[attr-defined]
        loops.extend(_scan_loops(child))
    return loops


def test_the_lookup_probes_every_value_whether_or_not_the_first_is_stored(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    # Review 15, finding 2: EXISTS ... OR EXISTS stopped at the first hit, so a call's time told
    # whether its purpose named a stored value. One UNION ALL of every probe runs them all.
    tokenized(stub_for, [(DEVICE, letters_device_id())])
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT token, token_type, fingerprint FROM vault.tokens WHERE fingerprint IS NOT NULL LIMIT 1"
        ).fetchone()
        assert row is not None
        token, token_type, stored = row
        misses = [uuid.uuid4().bytes * 2 for _ in range(4)]
        wanted = {
            "types": [token_type] * 5,
            "fps": [stored, *misses],
            "tokens": [token, *(f"dev_{uuid.uuid4().hex[:22]}" for _ in range(3))],
        }
        explained = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {tokens_module._STORED_AMONG}", wanted).fetchone()
        found = conn.execute(tokens_module._STORED_AMONG, wanted).fetchall()
    assert explained is not None and (stored,) in found
    assert sorted(_scan_loops(explained[0][0]["Plan"])) == [4, 5, 5]  # every probe of each column ran


def test_a_token_of_another_call_with_a_dash_and_one_more_is_withheld(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    # Review 15, finding 5: one more `-` beside a `.` split hid a random part holding `-` or `_`
    # from both readings of `token_ids_in`; the separator-free form is read for a random part.
    ip_token, *devices = tokenized(
        stub_for, [(IP_TYPE, benchmarking_ip())] + [(DEVICE, letters_device_id()) for _ in range(200)]
    )
    purpose = next(filter(None, map(_split_past_both_readings, (d.removeprefix("dev_") for d in devices))))
    before = last_audit_id(stack_env)
    (result,) = (
        stub_for("analyst")
        .Detokenize(vault_pb2.DetokenizeRequest(tokens=[ip_token], purpose=purpose), timeout=10)
        .results
    )
    assert result.WhichOneof("result") == "value"
    assert audit_rows_since(stack_env, before, "analyst") == [("detokenize", "ok: 1 revealed, 0 refused", "")]


def _split_past_both_readings(body: str) -> str | None:
    """`INC-`, a random part holding one `-` or `_`, one more `-` and a `.`: past the shape check and token_ids_in."""
    if body.count("-") + body.count("_") != 1 or not 1 <= sum(c.isdigit() for c in body) <= 3:
        return None
    for dash in range(4, 12):
        for dot in range(dash + 4, 20):
            purpose = f"INC-{body[:dash]}-{body[dash:dot]}.{body[dot:]}"
            if unfit_purpose(purpose) is None and not any(body in t for t in token_ids_in(purpose)):
                return purpose if may_hold_a_token(purpose) else None  # see may_hold_a_token for what it misses
    return None


def test_a_token_id_planted_by_the_serving_role_blanks_no_reference(
    stack_env: dict[str, str], stub_for: StubFor
) -> None:
    # Attack 27, F7: the serving role inserted `ip_<first 22 characters of a reference>` (its random part
    # is anything it likes) and every later reference of that shape was withheld from the audit log.
    n = uuid.uuid4().int
    case = "INV" + "".join(chr(ord("A") + (n >> (5 * i)) % 26) for i in range(10))  # 13 characters
    purpose = f"{case}-2026-12-05-A27"
    window = purpose[:22]
    assert f"ip_{window}" in token_ids_in(purpose)  # looked up as a token id
    ip_token, _ = tokenized(stub_for, [(IP_TYPE, benchmarking_ip()), (DEVICE, letters_device_id())])
    with psycopg.connect(stack_env["PG_VAULT_DSN"], autocommit=True) as role:  # the serving role
        row = role.execute(
            "SELECT fingerprint_key_id, dek_id, length(sealed) FROM vault.tokens WHERE token = %s", (ip_token,)
        ).fetchone()
        assert row is not None
        fk, dek, size = row
        role.execute(
            "INSERT INTO vault.tokens (token, token_type, fingerprint, fingerprint_key_id, dek_id, sealed)"
            " VALUES (%s, 'ip', %s, %s, %s, %s)",
            (f"ip_{window}", uuid.uuid4().bytes * 2, fk, dek, uuid.uuid4().bytes * (size // 16 + 1)),
        )
    before = last_audit_id(stack_env)
    reveal = vault_pb2.DetokenizeRequest(tokens=[ip_token], purpose=purpose)
    (result,) = stub_for("analyst").Detokenize(reveal, timeout=10).results
    assert result.WhichOneof("result") == "value"
    assert audit_rows_since(stack_env, before, "analyst") == [("detokenize", "ok: 1 revealed, 0 refused", purpose)]
