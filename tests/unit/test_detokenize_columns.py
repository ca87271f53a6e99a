"""Detokenize's column form: the server's encoding, the client's decoding, and both against older peers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from hypothesis import given
from hypothesis import strategies as st

from tokenvault_api.v1 import vault_pb2
from tokenvault_client import ClientIdentity, ItemError, ProtocolError, Reveal, Revealed, TokenType, VaultClient
from tokenvault_client.decoding import MalformedAnswer, outcomes_from_column, outcomes_from_results
from vault_service.domain import errors as domain
from vault_service.domain.policy import RevealLevel
from vault_service.domain.token_types import TokenType as DomainType
from vault_service.entrypoints.columns import revealed_lists, to_column, to_results
from vault_service.service.revealing import DetokenizeOutcome
from vault_service.service.revealing import Revealed as DomainRevealed

IP, PLAIN = vault_pb2.TOKEN_TYPE_IP, vault_pb2.REVEAL_PLAIN

MIX: list[DetokenizeOutcome] = [
    DomainRevealed(DomainType.IP, "192.0.2.7", RevealLevel.PLAIN),
    domain.TokenNotFound("no value is stored behind this token"),
    DomainRevealed(DomainType.DEVICE_ID, "***-**-5928", RevealLevel.MASKED),
    domain.PermissionDenied("client 'analyst' may not detokenize device_id tokens"),
    domain.InvalidValue("not a token"),
    DomainRevealed(DomainType.IP, "198.51.100.1", RevealLevel.MASKED),
]


def _wire(response: vault_pb2.DetokenizeResponse) -> vault_pb2.DetokenizeResponse:
    """The response as the client receives it: serialized and parsed again."""
    return vault_pb2.DetokenizeResponse.FromString(response.SerializeToString())


def test_the_column_carries_values_types_and_reveals_by_position_and_errors_where_they_failed() -> None:
    column = _wire(vault_pb2.DetokenizeResponse(column=to_column(revealed_lists(MIX)))).column
    assert list(column.values) == ["192.0.2.7", "", "***-**-5928", "", "", "198.51.100.1"]
    assert list(column.types) == [1, 0, 2, 0, 0, 1]
    assert list(column.reveals) == [vault_pb2.REVEAL_PLAIN, 0, vault_pb2.REVEAL_MASKED, 0, 0, vault_pb2.REVEAL_MASKED]
    assert {p: e.code for p, e in column.errors.items()} == {1: 5, 3: 7, 4: 3}
    assert "may not detokenize device_id" in column.errors[3].message


def test_the_client_decodes_the_column_into_the_same_outcomes_as_the_per_item_form() -> None:
    lists = revealed_lists(MIX)
    from_column = outcomes_from_column(_wire(vault_pb2.DetokenizeResponse(column=to_column(lists))).column, len(MIX))
    from_results = outcomes_from_results(_wire(vault_pb2.DetokenizeResponse(results=to_results(lists))).results, 6)
    assert from_column == from_results
    assert from_column[0] == Revealed(TokenType.IP, "192.0.2.7", Reveal.PLAIN)
    assert from_column[2] == Revealed(TokenType.DEVICE_ID, "***-**-5928", Reveal.MASKED)
    assert from_column[5] == Revealed(TokenType.IP, "198.51.100.1", Reveal.MASKED)
    assert from_column[1] == ItemError(grpc.StatusCode.NOT_FOUND, "no value is stored behind this token")
    assert [type(o) for o in from_column] == [Revealed, ItemError, Revealed, ItemError, ItemError, Revealed]
    assert "192.0.2.7" not in repr(from_column) and "5928" not in repr(from_column)


def test_the_per_item_form_is_what_it_was_before_columns() -> None:
    results = to_results(revealed_lists(MIX[:2]))
    assert results == [
        vault_pb2.DetokenizeResult(
            value=vault_pb2.RevealedValue(
                type=vault_pb2.TOKEN_TYPE_IP, value="192.0.2.7", reveal=vault_pb2.REVEAL_PLAIN
            )
        ),
        vault_pb2.DetokenizeResult(error=vault_pb2.ItemError(code=5, message="no value is stored behind this token")),
    ]


def test_an_empty_call_answers_an_empty_column_the_client_can_tell_from_no_column() -> None:
    answered = _wire(vault_pb2.DetokenizeResponse(column=to_column(revealed_lists([]))))
    assert answered.HasField("column") and outcomes_from_column(answered.column, 0) == []
    assert not _wire(vault_pb2.DetokenizeResponse()).HasField("column")


def test_unknown_numbers_decode_as_no_type_and_masked_never_plain() -> None:
    column = vault_pb2.RevealedColumn(values=["x"], types=[99], reveals=[42])  # type: ignore[list-item]
    assert outcomes_from_column(column, 1) == [Revealed(None, "x", Reveal.MASKED)]


@pytest.mark.parametrize(
    "column",
    [
        vault_pb2.RevealedColumn(values=["a", "b"], types=[IP] * 2, reveals=[PLAIN] * 2),
        vault_pb2.RevealedColumn(values=["a", "b", "c"], types=[IP] * 2, reveals=[PLAIN] * 3),
        vault_pb2.RevealedColumn(
            values=["a", "b", "c"], types=[IP] * 3, reveals=[PLAIN] * 3, errors={3: vault_pb2.ItemError(code=5)}
        ),
    ],
)
def test_a_column_that_does_not_fit_the_request_is_refused(column: vault_pb2.RevealedColumn) -> None:
    with pytest.raises(MalformedAnswer):
        outcomes_from_column(column, 3)


_outcomes = st.lists(
    st.one_of(
        st.builds(
            DomainRevealed,
            st.sampled_from(list(DomainType)),
            st.text(max_size=12),
            st.sampled_from([RevealLevel.PLAIN, RevealLevel.MASKED]),
        ),
        st.builds(domain.TokenNotFound, st.text(max_size=8)),
        st.builds(domain.PermissionDenied, st.text(max_size=8)),
    ),
    max_size=40,
)


@given(_outcomes)
def test_column_and_per_item_forms_always_decode_alike(outcomes: list[DetokenizeOutcome]) -> None:
    lists = revealed_lists(outcomes)
    column = _wire(vault_pb2.DetokenizeResponse(column=to_column(lists))).column
    results = _wire(vault_pb2.DetokenizeResponse(results=to_results(lists))).results
    assert outcomes_from_column(column, len(outcomes)) == outcomes_from_results(results, len(outcomes))


# -- the client against a new and an old vault ------------------------------------------------


class ColumnVault:
    """Answers like a vault that knows columns: a column when asked, else one result per token."""

    def __init__(self, column: vault_pb2.RevealedColumn | None = None) -> None:
        self.requests: list[vault_pb2.DetokenizeRequest] = []
        self.column = column

    def Detokenize(self, request: vault_pb2.DetokenizeRequest, timeout: float) -> vault_pb2.DetokenizeResponse:
        self.requests.append(request)
        outcomes: list[DetokenizeOutcome] = [
            domain.TokenNotFound("none") if t == "gone" else DomainRevealed(DomainType.IP, f"v:{t}", RevealLevel.PLAIN)
            for t in request.tokens
        ]
        lists = revealed_lists(outcomes)
        if not request.as_column:
            return vault_pb2.DetokenizeResponse(results=to_results(lists))
        return _wire(vault_pb2.DetokenizeResponse(column=self.column or to_column(lists)))


class OldVault:
    """A vault from before columns: its DetokenizeRequest has no field 3, so it reads past the flag."""

    def __init__(self) -> None:
        old_request = descriptor_pb2.DescriptorProto()
        vault_pb2.DetokenizeRequest.DESCRIPTOR.CopyToProto(old_request)
        del old_request.field[2]  # as_column
        assert [f.name for f in old_request.field] == ["tokens", "purpose"]
        file = descriptor_pb2.FileDescriptorProto(name="old_vault.proto", package="old", syntax="proto3")
        file.message_type.append(old_request)
        pool = descriptor_pool.DescriptorPool()
        pool.Add(file)
        self._request_type: Any = message_factory.GetMessageClass(pool.FindMessageTypeByName("old.DetokenizeRequest"))

    def Detokenize(self, request: vault_pb2.DetokenizeRequest, timeout: float) -> vault_pb2.DetokenizeResponse:
        seen = self._request_type.FromString(request.SerializeToString())
        results = [
            vault_pb2.DetokenizeResult(value=vault_pb2.RevealedValue(type=IP, value=f"old:{t}", reveal=PLAIN))
            for t in seen.tokens
        ]
        assert seen.purpose == "CASE-1"
        return _wire(vault_pb2.DetokenizeResponse(results=results))


def _client(stub: Any) -> VaultClient:
    return VaultClient(None, stub=stub, identity=ClientIdentity(Path("ca"), Path("c.pem"), Path("k.pem")))


def test_the_client_asks_for_a_column_and_reads_it() -> None:
    vault = ColumnVault()
    outcomes = _client(vault).detokenize(["t1", "gone", "t3"], "CASE-1")
    assert all(r.as_column for r in vault.requests)
    assert outcomes == [
        Revealed(TokenType.IP, "v:t1", Reveal.PLAIN),
        ItemError(grpc.StatusCode.NOT_FOUND, "none"),
        Revealed(TokenType.IP, "v:t3", Reveal.PLAIN),
    ]


def test_the_client_reads_the_per_item_answer_of_a_vault_older_than_columns() -> None:
    outcomes = _client(OldVault()).detokenize(["t1", "t2"], "CASE-1")
    assert outcomes == [Revealed(TokenType.IP, "old:t1", Reveal.PLAIN), Revealed(TokenType.IP, "old:t2", Reveal.PLAIN)]


def test_a_client_without_the_flag_gets_one_result_per_token_from_a_vault_with_columns() -> None:
    answer = ColumnVault().Detokenize(vault_pb2.DetokenizeRequest(tokens=["t1", "gone"], purpose="CASE-1"), 5)
    assert not answer.HasField("column") and len(answer.results) == 2
    assert answer.results[0].value.value == "v:t1" and answer.results[1].error.code == 5


def test_a_column_of_the_wrong_length_is_a_protocol_error_not_a_shifted_answer() -> None:
    short = vault_pb2.RevealedColumn(values=["a"], types=[IP], reveals=[PLAIN])
    with pytest.raises(ProtocolError, match="1 values, 1 types, 1 reveals for 2 tokens"):
        _client(ColumnVault(short)).detokenize(["t1", "t2"], "CASE-1")
