"""A purpose holding the call's own value is never stored, and never tells the caller its guess was right.

Insider round 8, break 1 (docs/threat-model.md, *What the audit trail proves*): the purpose is kept
for good in the hash-chained audit log, so a privacy officer naming the device in the erasure's
purpose (`GDPR-2026-801-SM-G991B-ATK8Q7ZX`) left the erased value where erasure cannot reach it.
The vault opens the values of the call and compares them with every value the purpose can spell
(as written, any case, with other separators or none; an ip also in hex or in an `inet_aton`
short form):
- a Detokenize that reveals the value in plain is refused with INVALID_ARGUMENT: nothing revealed,
  the refusal audited with an empty purpose;
- a masked reveal or an erasure goes on as with any other purpose, audited with an empty purpose:
  refused when the guess is right and served when it is wrong, the call would confirm a guess of
  a value the caller may not see (review A, finding 1).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import psycopg
import pytest

from tests.integration.audit_rows import audit_rows_since, last_audit_id, without_fetch_mark
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from vault_service.domain.audit import FETCH_SAW

StubFor = Callable[..., vault_pb2_grpc.TokenVaultStub]
Values = dict[str, str]  # "ip", "device" -> value; "ip_token", "device_token" -> token


def _device_id() -> str:
    """A made-up device id of a common shape whose random part is letters only (no number detector fires)."""
    n = uuid.uuid4().int
    return "SM-G991B-" + "".join(chr(ord("A") + (n >> (5 * i)) % 26) for i in range(8))


IP = "203.0.113.7"
"""A documentation address; its hex forms (cb007107) pass the pattern detector, as the attack showed.
Not fresh: tokenizing it again after the last test's erasure issues a new token."""


OWN_VALUE = "PurposeHoldsOwnValue"
"""The refusal of a purpose holding the call's own value; the short form is refused as an address by any call."""
_SPELLINGS: list[tuple[Callable[[Values], str], str, str]] = [
    (lambda v: f"GDPR-2026-801-{v['device']}", OWN_VALUE, "the device id as written, after a reference"),
    (lambda v: f"CASE-2026-801:{v['device'].lower()}", OWN_VALUE, "the device id in lower case"),
    (lambda v: v["device"], OWN_VALUE, "the device id alone (it has the form of a reference)"),
    # attack 10, finding 1: the device id with its separators dropped or replaced was kept in the audit log
    (lambda v: f"INC-{v['device'].replace('-', '')}", OWN_VALUE, "the device id without its separators"),
    (lambda v: f"INC-{v['device'].replace('-', '_')}", OWN_VALUE, "the device id with underscores"),
    (lambda v: f"INC-{v['device'].replace('-', '.').lower()}", OWN_VALUE, "the device id with dots, lower case"),
    (lambda v: "INC-cb007107", OWN_VALUE, "the ip as hex without 0x"),
    (lambda v: "INC-CB007107-review", OWN_VALUE, "the ip as upper-case hex"),
    (lambda v: "INC-203.28935", "InvalidRequest", "the ip in an inet_aton short form"),
    # attack 11, findings 4 and 5: an inet_aton form glued to a letter was kept in the audit log
    (lambda v: "INC-V203.0.28935", OWN_VALUE, "the ip in an inet_aton short form after a v"),
    (lambda v: "INC-V0313.28935", "InvalidRequest", "the ip in an octal inet_aton form after a v"),
    (lambda v: "CASE-9V203.0.28935", "InvalidRequest", "the ip in an inet_aton short form after a digit and a v"),
    # attack 14, finding 5: the ip in hex octets or hex halves was kept in the audit log
    (lambda v: "INC-cb00-7107", OWN_VALUE, "the ip as two hex halves"),
    (lambda v: "INC-CB-00-71-07", "InvalidRequest", "the ip as hex octets joined by dashes"),
    (lambda v: "INC-CB.00.71.07", "InvalidRequest", "the ip as hex octets joined by dots"),
    # attack 15, finding 5: the ip's hex or decimal number split at other places was kept verbatim
    (lambda v: "INC-cb0-07107", OWN_VALUE, "the ip's hex number split 3-5"),
    (lambda v: "INC-C-B007107", OWN_VALUE, "the ip's hex number split 1-7"),
    (lambda v: "INC-34058-03783", OWN_VALUE, "the ip's decimal number split 5-5"),
    (lambda v: "INC-340-580-3783", OWN_VALUE, "the ip's decimal number split 3-3-4"),
    # attack 16, finding 3: the digits of the ip's dotted form regrouped were kept verbatim
    (lambda v: "REQ-2030-1137", OWN_VALUE, "the ip's dotted digits regrouped 4-4"),
    (lambda v: "REQ-203-0113-7", OWN_VALUE, "the ip's dotted digits regrouped 3-4-1"),
    (lambda v: "REQ-20301-137", OWN_VALUE, "the ip's dotted digits regrouped 5-3"),
]
_PARAMS = [pytest.param(spell, refusal, id=why) for spell, refusal, why in _SPELLINGS]


@pytest.fixture
def values(stub_for: StubFor) -> Values:
    """The ip and a fresh device id, tokenized as the ETL."""
    ip, device = IP, _device_id()
    items = [
        vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=ip),
        vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_DEVICE_ID, value=device),
    ]
    ip_result, device_result = (
        stub_for("etl-service").Tokenize(vault_pb2.TokenizeRequest(items=items), timeout=10).results
    )
    return {"ip": ip, "device": device, "ip_token": ip_result.token, "device_token": device_result.token}


def _audited_since(env: dict[str, str], after: int, client: str, values: Values, purpose: str) -> list[tuple[str, str]]:
    """(action, outcome) of `client`'s rows after `after`; asserts that no row holds the purpose or a value."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        holding = conn.execute(
            "SELECT count(*) FROM vault.audit_log WHERE purpose = %s OR lower(purpose) LIKE ANY(%s)",
            (purpose, [f"%{values['device'].lower()}%", f"%{values['ip']}%"]),
        ).fetchone()
        rows = conn.execute(
            "SELECT action, outcome, purpose FROM vault.audit_log WHERE id > %s AND client = %s ORDER BY id",
            (after, client),
        ).fetchall()
    assert holding == (0,), "an audit row holds the purpose or one of the call's values"
    kept_none = all(kept == "" for _, _, kept in rows)
    assert kept_none, "an audit row of the call keeps its purpose"
    return [(action, without_fetch_mark(outcome)) for action, outcome, _ in rows]


def _audit_holds(env: dict[str, str], value: str) -> bool:
    """Whether any audit row's purpose holds `value` (case-insensitive)."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT count(*) FROM vault.audit_log WHERE lower(purpose) LIKE %s", (f"%{value.lower()}%",))
        found = row.fetchone()
    return found != (0,)


def _tokenized_device(stub_for: StubFor) -> str:
    """The token of a fresh device id, tokenized as the ETL."""
    device = _device_id()
    item = vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_DEVICE_ID, value=device)
    (result,) = stub_for("etl-service").Tokenize(vault_pb2.TokenizeRequest(items=[item]), timeout=10).results
    return str(result.token)


def _outcome(call: Callable[[], object]) -> object:
    """What the caller gets: the response, or the status code and details of the refusal."""
    try:
        return call()
    except grpc.RpcError as refused:
        return (refused.code(), refused.details())


def _refused(call: Callable[[], object], values: Values) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    details = (refused.value.details() or "").lower()
    quotes_a_value = values["device"].lower() in details or values["ip"] in details
    assert not quotes_a_value, "the refusal quotes a value of the call"
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "purpose must not contain" in details and "such as inc-4821" in details, details


@pytest.mark.parametrize(("spell", "refusal"), _PARAMS)
def test_a_reveal_whose_purpose_holds_its_own_value_is_refused_and_audited_without_it(
    stack_env: dict[str, str], stub_for: StubFor, values: Values, spell: Callable[[Values], str], refusal: str
) -> None:
    purpose = spell(values)
    investigator = stub_for("fraud-investigator")
    before = last_audit_id(stack_env)
    request = vault_pb2.DetokenizeRequest(tokens=[values["ip_token"], values["device_token"]], purpose=purpose)
    _refused(lambda: investigator.Detokenize(request, timeout=10), values)
    audited = _audited_since(stack_env, before, "fraud-investigator", values, purpose)
    assert audited == [("detokenize", f"refused: {refusal}")]


def test_a_plain_reveal_refused_for_its_own_value_names_the_tokens_as_a_reveal_does(
    stack_env: dict[str, str], stub_for: StubFor, values: Values
) -> None:
    # The refusal tells a caller who sees the value in plain that its guess was right: unless its
    # audit row names the tokens, `audit who-saw` would not list that confirmation.
    purpose = f"GDPR-2026-801-{values['device']}"
    before = last_audit_id(stack_env)
    request = vault_pb2.DetokenizeRequest(tokens=[values["ip_token"], values["device_token"]], purpose=purpose)
    _refused(lambda: stub_for("fraud-investigator").Detokenize(request, timeout=10), values)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(
            "SELECT outcome, cardinality(revealed) FROM vault.audit_log WHERE id > %s AND client = %s",
            (before, "fraud-investigator"),
        ).fetchall()
    ((outcome, named),) = rows
    assert (without_fetch_mark(outcome), named) == (f"refused: {OWN_VALUE}", 2)
    assert FETCH_SAW in outcome  # what its fetch saw: verify judges it against an erasure as a reveal (A43-1/A43-2)


@pytest.mark.parametrize(("spell", "refusal"), _PARAMS)
def test_an_erasure_whose_purpose_holds_its_own_value_erases_and_is_audited_without_it(
    stack_env: dict[str, str], stub_for: StubFor, values: Values, spell: Callable[[Values], str], refusal: str
) -> None:
    purpose = spell(values)
    tokens = [values["ip_token"], values["device_token"]]
    before = last_audit_id(stack_env)
    erase = vault_pb2.EraseRequest(tokens=tokens, purpose=purpose)
    if refusal != OWN_VALUE:  # refused as an address whatever the call's values: nothing to guess from
        _refused(lambda: stub_for("privacy-officer").Erase(erase, timeout=10), values)
        audited = _audited_since(stack_env, before, "privacy-officer", values, purpose)
        assert audited == [("erase", f"refused: {refusal}")]
        return
    erased = stub_for("privacy-officer").Erase(erase, timeout=10)
    assert [r.erased for r in erased.results] == [True, True]
    audited = _audited_since(stack_env, before, "privacy-officer", values, purpose)
    assert audited == [("erase", "ok: 2 erased, 0 not erased")]


@dataclass(frozen=True)
class _Guesser:
    """A client that may not see the device id in plain, and a call of its that must not test a guess of it."""

    client: str
    action: str  # as audited
    call: Callable[[vault_pb2_grpc.TokenVaultStub, str, str], object]  # (stub, token, purpose) -> response
    served: Callable[[object], bool]  # whether a response is the call served
    erases: bool  # an erasure spends its token: the wrong guess goes to another token, checked erased after


_GUESSERS = [
    pytest.param(
        _Guesser(
            "analyst",  # sees device ids masked (last four characters)
            "detokenize",
            lambda stub, token, purpose: stub.Detokenize(
                vault_pb2.DetokenizeRequest(tokens=[token], purpose=purpose), timeout=10
            ),
            lambda outcome: isinstance(outcome, vault_pb2.DetokenizeResponse),
            erases=False,
        ),
        id="masked reveal",
    ),
    pytest.param(
        _Guesser(
            "privacy-officer",  # sees nothing
            "erase",
            lambda stub, token, purpose: stub.Erase(
                vault_pb2.EraseRequest(tokens=[token], purpose=purpose), timeout=10
            ),
            lambda outcome: (
                isinstance(outcome, vault_pb2.EraseResponse) and [r.erased for r in outcome.results] == [True]
            ),
            erases=True,
        ),
        id="erasure",
    ),
]


@pytest.mark.parametrize("guesser", _GUESSERS)
def test_a_client_not_seeing_the_value_gets_the_same_outcome_whether_its_purpose_guesses_it_or_not(
    stack_env: dict[str, str], stub_for: StubFor, values: Values, guesser: _Guesser
) -> None:
    # Were a purpose holding the right device id refused, and a wrong one served, each call (a
    # masked reveal, or an erasure) would test a guess of a value the client may not see.
    stub = stub_for(guesser.client)
    other_token = _tokenized_device(stub_for) if guesser.erases else values["device_token"]
    right = f"GDPR-2026-801-{values['device']}"
    wrong = f"GDPR-2026-801-{_device_id()}"  # a wrong guess (of the other token's device id, for an erasure)
    before = last_audit_id(stack_env)
    got = [
        _outcome(lambda t=token, p=purpose: guesser.call(stub, t, p))  # type: ignore[misc]
        for token, purpose in ((values["device_token"], right), (other_token, wrong))
    ]
    same = got[0] == got[1]
    served = all(guesser.served(outcome) for outcome in got)
    assert same and served, f"the outcome differs with the guess, or the {guesser.action} was refused"
    rows = audit_rows_since(stack_env, before, guesser.client)
    assert [(action, purpose == "", purpose == wrong) for action, _, purpose in rows] == [
        (guesser.action, True, False),  # the right guess: audited without its purpose
        # The wrong guess: kept by a masked reveal; an Erase withholds any purpose holding a device
        # id's shape, right or wrong (review 16, finding 2), so both rows read alike there.
        (guesser.action, True, False) if guesser.erases else (guesser.action, False, True),
    ]
    assert not _audit_holds(stack_env, values["device"]), "an audit row holds the device id"
    if guesser.erases:
        check = vault_pb2.DetokenizeRequest(tokens=[values["device_token"], other_token], purpose="CASE-2026-801-CHECK")
        results = stub_for("fraud-investigator").Detokenize(check, timeout=10).results
        assert [r.error.code for r in results] == [grpc.StatusCode.NOT_FOUND.value[0]] * 2, "a value was not erased"


def test_a_reference_not_holding_the_calls_values_reveals_and_erases_as_before(
    stack_env: dict[str, str], stub_for: StubFor, values: Values
) -> None:
    tokens = [values["ip_token"], values["device_token"]]
    check = vault_pb2.DetokenizeRequest(tokens=tokens, purpose="GDPR-2026-0042")
    results = stub_for("fraud-investigator").Detokenize(check, timeout=10).results
    revealed_as_stored = [r.value.value for r in results] == [values["ip"], values["device"]]
    assert revealed_as_stored, "the values were not revealed as stored"
    erased = stub_for("privacy-officer").Erase(
        vault_pb2.EraseRequest(tokens=tokens, purpose="GDPR-2026-0042"), timeout=10
    )
    assert [r.erased for r in erased.results] == [True, True]
