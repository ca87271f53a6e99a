"""Detokenize's column form through the real server equals its per-item form, token for token."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest

from tests.conftest import RunningVault, client_channel, running_vault, stack_identity
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_client import ItemError, Reveal, Revealed, TokenType, VaultClient
from tokenvault_client.decoding import outcomes_from_column, outcomes_from_results

POLICY = """
[clients.etl-service]
tokenize = ["ip", "device_id"]
[clients.privacy-officer]
erase = ["ip", "device_id"]
[clients.analyst.detokenize]
ip = "plain"
device_id = "masked"
[clients.fraud-investigator.detokenize]
ip = "masked"
"""


@pytest.fixture(scope="module")
def columns_vault(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningVault]:
    """A vault whose fraud investigator may see ips masked and no device ids at all."""
    policy = tmp_path_factory.mktemp("columns") / "policy.toml"
    policy.write_text(POLICY)
    with running_vault(stack_env, TOKENVAULT_POLICY_FILE=str(policy)) as running:
        yield running


@pytest.fixture(scope="module")
def mixed_tokens(stack_env: dict[str, str], columns_vault: RunningVault) -> list[str]:
    """Valid ip and device tokens, an erased one, an unknown one and a string that is no token."""
    n = uuid.uuid4().int
    ips = [f"10.{n % 250}.{(n >> 8) % 250}.{i}" for i in range(3)]
    device = f"{n % 900 + 100:03d}-{(n >> 10) % 90 + 10:02d}-{(n >> 20) % 9000 + 1000:04d}"
    with VaultClient.connect(columns_vault.address, stack_identity(stack_env, "etl-service")) as etl:
        ip_column, device_column = etl.tokenize_columns([(TokenType.IP, ips), (TokenType.DEVICE_ID, [device])])
    with VaultClient.connect(columns_vault.address, stack_identity(stack_env, "privacy-officer")) as officer:
        assert officer.erase([ip_column.tokens[2]], "ERASE-COLUMNS") == [None]
    erased, unknown = ip_column.tokens[2], "ip_" + "U" * 22
    return [ip_column.tokens[0], device_column.tokens[0], erased, unknown, "no-token", ip_column.tokens[1]]


def _both_forms(
    stack_env: dict[str, str], vault: RunningVault, client: str, tokens: list[str]
) -> tuple[vault_pb2.DetokenizeResponse, vault_pb2.DetokenizeResponse]:
    channel = client_channel(stack_env, vault.address, client)
    with channel:
        stub = vault_pb2_grpc.TokenVaultStub(channel)
        per_item = stub.Detokenize(vault_pb2.DetokenizeRequest(tokens=tokens, purpose="CASE-COL-1"), timeout=10)
        as_column = stub.Detokenize(
            vault_pb2.DetokenizeRequest(tokens=tokens, purpose="CASE-COL-2", as_column=True), timeout=10
        )
    return per_item, as_column


@pytest.mark.parametrize("client", ["analyst", "fraud-investigator"])
def test_the_column_form_answers_exactly_what_the_per_item_form_does(
    stack_env: dict[str, str], columns_vault: RunningVault, mixed_tokens: list[str], client: str
) -> None:
    per_item, as_column = _both_forms(stack_env, columns_vault, client, mixed_tokens)
    assert not per_item.HasField("column") and len(per_item.results) == len(mixed_tokens)  # old clients: unchanged
    assert as_column.HasField("column") and not as_column.results
    column = as_column.column
    for position, result in enumerate(per_item.results):
        if result.WhichOneof("result") == "error":
            assert column.errors[position] == result.error
            assert (column.values[position], column.types[position], column.reveals[position]) == ("", 0, 0)
        else:
            assert position not in column.errors
            revealed = (column.values[position], column.types[position], column.reveals[position])
            assert revealed == (result.value.value, result.value.type, result.value.reveal)
    decoded = outcomes_from_column(column, len(mixed_tokens))
    assert decoded == outcomes_from_results(per_item.results, len(mixed_tokens))


def test_the_mix_reveals_plain_masked_and_each_refusal_by_position(
    stack_env: dict[str, str], columns_vault: RunningVault, mixed_tokens: list[str]
) -> None:
    with VaultClient.connect(columns_vault.address, stack_identity(stack_env, "fraud-investigator")) as investigator:
        ip, device, erased, unknown, junk, other_ip = investigator.detokenize(mixed_tokens, "CASE-COL-3")
    assert isinstance(ip, Revealed) and ip.reveal is Reveal.MASKED and ip.token_type is TokenType.IP
    assert isinstance(other_ip, Revealed) and other_ip.reveal is Reveal.MASKED
    assert isinstance(device, ItemError) and device.code == grpc.StatusCode.PERMISSION_DENIED
    assert isinstance(erased, ItemError) and erased.code == grpc.StatusCode.NOT_FOUND
    assert isinstance(unknown, ItemError) and unknown.code == grpc.StatusCode.NOT_FOUND
    assert isinstance(junk, ItemError) and junk.code == grpc.StatusCode.INVALID_ARGUMENT
    with VaultClient.connect(columns_vault.address, stack_identity(stack_env, "analyst")) as analyst:
        ip, device, *_ = analyst.detokenize(mixed_tokens, "CASE-COL-4")
    assert isinstance(ip, Revealed) and ip.reveal is Reveal.PLAIN and ip.value.startswith("10.")
    assert isinstance(device, Revealed) and device.reveal is Reveal.MASKED and device.value.startswith("***-**-")


@pytest.mark.parametrize(
    "shape",
    [
        "!#$%&()+,/;<=>?@[]^`{|}~",  # ASCII symbols only
        "\u3001\u3002\u300c\u300d\u300e\u300f\u3010\u3011\u3014\u3015",  # CJK punctuation
        "a\u0301\u0302\u0303b\u0304\u0305\u0306c\u0307\u0308\u0309\u030a",  # letters and combining marks
    ],
)
def test_a_masked_device_id_of_symbols_shows_only_its_last_four_characters(
    stack_env: dict[str, str], columns_vault: RunningVault, shape: str
) -> None:
    """Attack 56, A56-2: the mask hid letters and digits only, so an analyst's masked reveal of a device id made of
    symbols, punctuation or combining marks showed it whole (35 of 35 characters). Now everything before the last
    four is '*' but the separators `-.:_`. The ETL tokenizes, the analyst reveals, through the real server."""
    device = shape + uuid.uuid4().hex[:8]  # a value of its own each run; the last four are hex digits
    with VaultClient.connect(columns_vault.address, stack_identity(stack_env, "etl-service")) as etl:
        ((token,),) = [column.tokens for column in etl.tokenize_columns([(TokenType.DEVICE_ID, [device])])]
    with VaultClient.connect(columns_vault.address, stack_identity(stack_env, "analyst")) as analyst:
        (revealed,) = analyst.detokenize([token], "CASE-MASK-1")
    assert isinstance(revealed, Revealed) and revealed.reveal is Reveal.MASKED
    assert revealed.value == "*" * (len(device) - 4) + device[-4:]  # no symbol of the value shown
