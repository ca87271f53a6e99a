"""What RevealVolumeHigh reads, scraped from a real vault: values revealed by client, and each client's budget.

A client revealing in bulk within its budget is refused nothing, so only these series show it:
the values Detokenize showed each client (not the tokens it refused, nor a refused call's) and
the hourly budget the policy gives it. The alert's audit query is run as the on-call would.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devstack.procs import free_port, stop_pid
from tests.conftest import client_channel
from tests.integration.conftest import start_vault_process
from tests.integration.fresh_values import fresh_value
from tests.metrics_scrape import stack_scrape
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

IP, DEVICE = vault_pb2.TOKEN_TYPE_IP, vault_pb2.TOKEN_TYPE_DEVICE_ID
ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "tokenvault-alerts.yml"
PURPOSE = "INC-7301"


@pytest.fixture
def metered_vault(stack_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, int]]:
    """`python -m vault_service` with its metrics on a port of its own (the config policy): (address, metrics port)."""
    port = free_port()
    address, pid = start_vault_process(stack_env, tmp_path / "vault.log", TOKENVAULT_METRICS_PORT=str(port))
    try:
        yield address, port
    finally:
        stop_pid(pid)


def scrape(stack_env: dict[str, str], port: int) -> dict[tuple[str, str], float]:
    """(sample name, client) -> value of every sample labelled by client, as the stack's scraper reads them."""
    text = stack_scrape(stack_env, f"https://127.0.0.1:{port}/metrics")
    return {
        (sample.name, sample.labels["client"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "client" in sample.labels
    }


def test_values_revealed_count_by_client_only_what_was_shown_and_the_budget_is_the_policy_s(
    stack_env: dict[str, str], metered_vault: tuple[str, int]
) -> None:
    address, port = metered_vault
    with client_channel(stack_env, address, "etl-service") as channel:
        values = [(IP, fresh_value(IP)), (IP, fresh_value(IP)), (DEVICE, fresh_value(DEVICE))]
        request = vault_pb2.TokenizeRequest(items=[vault_pb2.TokenizeItem(type=t, value=v) for t, v in values])
        tokens = [r.token for r in vault_pb2_grpc.TokenVaultStub(channel).Tokenize(request, timeout=10).results]
    never_issued, not_a_token = "ip_" + "Q" * 22, "x"
    with client_channel(stack_env, address, "analyst") as channel:
        stub = vault_pb2_grpc.TokenVaultStub(channel)
        served = stub.Detokenize(
            vault_pb2.DetokenizeRequest(tokens=[*tokens, never_issued, not_a_token], purpose=PURPOSE), timeout=10
        )
        with pytest.raises(grpc.RpcError) as refused:  # a refused call shows nothing: none of its tokens counts
            stub.Detokenize(vault_pb2.DetokenizeRequest(tokens=tokens, purpose=""), timeout=10)
    assert [r.WhichOneof("result") for r in served.results] == ["value", "value", "value", "error", "error"]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with client_channel(stack_env, address, "privacy-officer") as channel, pytest.raises(grpc.RpcError) as denied:
        vault_pb2_grpc.TokenVaultStub(channel).Detokenize(
            vault_pb2.DetokenizeRequest(tokens=tokens, purpose=PURPOSE), timeout=10
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    samples = scrape(stack_env, port)
    revealed = {c: v for (name, c), v in samples.items() if name == "tokenvault_detokenize_values_revealed_total"}
    # two ips plain, a device id masked; not the two refused tokens. Each revealing client's series
    # exists from the start, at 0 until it reveals (R23-6: increase() counts a first call then).
    assert revealed == {"analyst": 3, "fraud-investigator": 0}
    budgets = {c: v for (name, c), v in samples.items() if name == "tokenvault_client_reveal_budget_per_hour"}
    assert budgets == {"analyst": 200 * 3600, "fraud-investigator": 200 * 3600}  # config/vault-policy.toml
    for alert in ("RevealVolumeHigh", "RevealVolumeHighDaily"):
        assert calls_and_tokens_the_alert_s_query_finds(stack_env, "analyst", alert) == (1, 5), alert


def calls_and_tokens_the_alert_s_query_finds(stack_env: dict[str, str], client: str, name: str) -> tuple[int, int]:
    """The audit query of alert `name` for `client`, as its description gives it: this test's purpose's row."""
    rules = yaml.safe_load(ALERTS.read_text())["groups"]
    alert = next(rule for group in rules for rule in group["rules"] if rule.get("alert") == name)
    found = re.search(r"SELECT .*? DESC", alert["annotations"]["description"])
    assert found is not None, "the description gives no audit query"
    query = found.group(0).replace("{{ $labels.client }}", client)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(query).fetchall()
    return next((calls, tokens) for _serial, purpose, calls, tokens in rows if purpose == PURPOSE)
