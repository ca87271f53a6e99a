"""Transit batch requests bounded by bytes as well as by count; no envelope larger than SQS holds (attack 14, #2).

OpenBao refuses a request body over its max_request_size with HTTP 413, as a whole: 130 claims of
250 kB in one rewrap failed every claim of a take-back or a source batch. The project's listeners
are bounded at 2 MiB (attack 22, F2): the largest request the ETL can build, measured on the wire,
fits. Over a fake hvac client or transport that records each request; the real OpenBao is in
tests/integration/test_dead_letter_proof_size.py and test_openbao_request_bound.py. The settings:
a sealing ETL refuses an ETL_MAX_BODY_BYTES whose sealed envelope would not fit one SQS message.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import requests.adapters

from devstack.openbao import MAX_REQUEST_BYTES as LISTENER_BOUND
from etl_service.adapters import transit_batches, transit_sealer
from etl_service.adapters.transit_batches import MAX_BATCH, MAX_REQUEST_BYTES
from etl_service.adapters.transit_sealer import TransitSealer
from etl_service.config import EtlConfig
from etl_service.domain.resent_times import tag_input
from etl_service.service.sealing import (
    MAX_ENVELOPE_BYTES,
    NOT_KEPT_TOO_LARGE,
    SQS_MAX_MESSAGE_BYTES,
    dead_letter_body,
    largest_sealable_body_bytes,
    longest_claim_chars,
)
from tests.unit.etl_builders import minimal_etl_env
from tokenvault_common.env import ConfigError

REPO = Path(__file__).resolve().parents[2]
KEY = transit_sealer.DEAD_LETTER_KEY


class RecordingTransit:
    """hvac's transit secrets engine as the sealer calls it: records each batch, answers each item."""

    def __init__(self) -> None:
        self.requests: list[list[dict[str, str]]] = []

    def encrypt_data(self, batch_input: list[dict[str, str]], **_: Any) -> dict[str, Any]:
        self.requests.append(batch_input)
        return {"data": {"batch_results": [{"ciphertext": "vault:v1:" + i["plaintext"]} for i in batch_input]}}

    def rewrap_data(self, batch_input: list[dict[str, str]], **_: Any) -> dict[str, Any]:
        self.requests.append(batch_input)
        return {"data": {"batch_results": [{"ciphertext": i["ciphertext"]} for i in batch_input]}}


def recording_sealer(tmp_path: Path) -> tuple[TransitSealer, RecordingTransit]:
    sealer = TransitSealer("http://127.0.0.1:9", "role", tmp_path / "unused")
    transit = RecordingTransit()
    sealer._client = SimpleNamespace(token="t", secrets=SimpleNamespace(transit=transit))
    return sealer, transit


def request_bytes(batch: list[dict[str, str]]) -> int:
    return len(json.dumps({"batch_input": batch}))


def claim(raw_bytes: int, index: int) -> str:
    return "vault:v1:" + base64.b64encode(index.to_bytes(4, "big") * (raw_bytes // 4)).decode()


def test_rewrap_requests_stay_under_the_byte_bound_and_every_claim_is_asked_once(tmp_path: Path) -> None:
    sealer, transit = recording_sealer(tmp_path)
    claims = [claim(190_000, i) for i in range(140)]  # ~35 MB in all: over OpenBao's default 32 MiB
    assert sealer.authentic(claims) == frozenset(claims)
    assert len(transit.requests) > 1
    assert all(request_bytes(r) <= MAX_REQUEST_BYTES for r in transit.requests)
    assert [i["ciphertext"] for r in transit.requests for i in r] == claims


def test_small_claims_are_still_bounded_by_count(tmp_path: Path) -> None:
    sealer, transit = recording_sealer(tmp_path)
    claims = [claim(32, i) for i in range(600)]
    assert sealer.authentic(claims) == frozenset(claims)
    assert [len(r) for r in transit.requests] == [MAX_BATCH, MAX_BATCH, 100]


def test_an_item_over_the_byte_bound_goes_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transit_batches, "MAX_REQUEST_BYTES", 1000)
    sealer, transit = recording_sealer(tmp_path)
    claims = [claim(40, 1), claim(2000, 2), claim(40, 3)]
    assert sealer.authentic(claims) == frozenset(claims)
    assert [len(r) for r in transit.requests] == [1, 1, 1]


def test_a_claim_longer_than_any_sqs_message_holds_is_not_proven_and_not_sent(tmp_path: Path) -> None:
    sealer, transit = recording_sealer(tmp_path)
    longest = longest_claim_chars(KEY)
    fits = "vault:v1:" + "A" * (longest - len("vault:v1:"))
    too_long = fits + "AAAA"
    assert len(dead_letter_body(fits, None, KEY)) == SQS_MAX_MESSAGE_BYTES
    assert sealer.authentic([too_long, fits]) == frozenset({fits})
    assert [i["ciphertext"] for r in transit.requests for i in r] == [fits]


def test_a_claim_whose_json_is_longer_than_any_sqs_message_holds_is_not_sent(tmp_path: Path) -> None:
    """Attack 22, F2: measured as sent; a control character is six bytes of JSON, none is in a ciphertext."""
    sealer, transit = recording_sealer(tmp_path)
    longest = longest_claim_chars(KEY)
    fits = "vault:v1:" + "A" * (longest - len("vault:v1:"))
    escaped = "vault:v1:" + "\x01" * (longest // 6)
    assert len(escaped) <= longest < len(json.dumps(escaped))
    assert sealer.authentic([escaped, fits, "vault:v1:\x01"]) == frozenset({fits, "vault:v1:\x01"})
    assert [i["ciphertext"] for r in transit.requests for i in r] == [fits, "vault:v1:\x01"]


def test_a_claim_longer_than_this_etl_writes_but_within_sqs_is_still_sent_to_rewrap(tmp_path: Path) -> None:
    """Review 15, finding 6: an earlier ETL with a larger ETL_MAX_BODY_BYTES sealed longer genuine letters."""
    sealer, transit = recording_sealer(tmp_path)
    older = "vault:v1:" + "A" * (257_000 - len("vault:v1:"))
    assert len(dead_letter_body(older, None, KEY)) > MAX_ENVELOPE_BYTES
    assert sealer.authentic([older]) == frozenset({older})
    assert [i["ciphertext"] for r in transit.requests for i in r] == [older]


class WireRecorder(requests.adapters.BaseAdapter):
    """A transport under hvac that records each request body's bytes and answers as Transit would."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[str, list[int]] = {}

    def send(self, request: requests.PreparedRequest, *_: Any, **__: Any) -> requests.Response:
        body = request.body if isinstance(request.body, bytes) else str(request.body or "").encode()
        path = str(request.path_url).split("/")
        action = path[-1] if path[-1] == "login" else path[-2]  # /v1/transit/<action>/<key>
        self.sizes.setdefault(action, []).append(len(body))
        items = json.loads(body).get("batch_input", [])
        answers = {
            "login": {"auth": {"client_token": "t", "lease_duration": 3600}},
            "encrypt": {"data": {"batch_results": [{"ciphertext": "vault:v1:AAAA"} for _ in items]}},
            "rewrap": {"data": {"batch_results": [{"ciphertext": "vault:v1:AAAA"} for _ in items]}},
            "verify": {"data": {"batch_results": [{"valid": True} for _ in items]}},
        }
        response = requests.Response()
        response.status_code, response.url, response.request = 200, str(request.url), request
        response._content = json.dumps(answers[action]).encode()
        response.headers["Content-Type"] = "application/json"
        return response

    def close(self) -> None:
        """Nothing to close."""


def test_the_largest_requests_the_etl_can_build_fit_the_openbao_listener_bound(tmp_path: Path) -> None:
    """Attack 22, F2: measured as hvac sends them, every batch stays under the listeners' max_request_size."""
    (tmp_path / "secret-id").write_text("s")
    sealer = TransitSealer("http://127.0.0.1:9", "role", tmp_path / "secret-id")
    wire = WireRecorder()
    sealer._client.session.mount("http://", wire)
    largest = largest_sealable_body_bytes(KEY)
    sealer.seal(["x" * largest] * 30 + ["y" * (MAX_REQUEST_BYTES // MAX_BATCH)] * 600)
    longest = longest_claim_chars(KEY)
    escaped = ["\x01" * longest, '"' * longest, "\u00e9" * longest, "\U0001f600" * (longest // 2)]
    sealer.authentic([claim(longest * 3 // 4 - 20, i) for i in range(30)] + escaped)
    # A re-sent time's claim: its event id is any attribute a sender wrote, up to a whole SQS message.
    astral = "\U0001f600" * (SQS_MAX_MESSAGE_BYTES // 4)
    sealer.verify_tags([(tag_input("m" * 200, astral, 1, "b"), "vault:v1:" + "A" * 43 + "=")] * 10)
    sealer.verify_tags([(tag_input("m", "e", 1, "b" * i), "vault:v1:" + "A" * 43 + "=") for i in range(600)])
    assert all(len(wire.sizes[action]) > 1 for action in ("encrypt", "rewrap", "verify")), wire.sizes
    largest_request = max(max(sizes) for sizes in wire.sizes.values())
    assert MAX_REQUEST_BYTES < largest_request <= LISTENER_BOUND, largest_request


def test_encrypt_requests_are_bounded_and_a_body_too_large_to_fit_sqs_is_not_kept(tmp_path: Path) -> None:
    sealer, transit = recording_sealer(tmp_path)
    largest = largest_sealable_body_bytes(KEY)
    bodies = ["x" * 150_000] * 60 + ["y" * (largest + 1), "z" * largest]
    envelopes = sealer.seal(bodies)
    assert all(request_bytes(r) <= MAX_REQUEST_BYTES for r in transit.requests)
    assert sum(len(r) for r in transit.requests) == 61  # the body too large is not sent
    assert envelopes[60] == dead_letter_body(None, NOT_KEPT_TOO_LARGE, None)
    assert json.loads(envelopes[61])["sealed_body"] is not None and json.loads(envelopes[0])["sealed_body"]


def test_the_largest_sealable_body_fits_one_sqs_message_with_its_attributes() -> None:
    largest = largest_sealable_body_bytes(KEY)
    ciphertext = "vault:v9999999999:" + base64.b64encode(bytes(largest + 12 + 16)).decode()
    envelope = dead_letter_body(ciphertext, None, KEY)
    worst_attributes = 4 * 1000 + 4 * 128 + 300  # a detail and an event id all in 4-byte characters, names, ids
    assert len(envelope) <= MAX_ENVELOPE_BYTES and len(envelope) + worst_attributes <= SQS_MAX_MESSAGE_BYTES
    assert 180_000 < largest < 200_000


def sealed_env(tmp_path: Path, max_body_bytes: int) -> dict[str, str]:
    env = {k: v for k, v in minimal_etl_env(tmp_path, "http://127.0.0.1:9/1/q").items() if k != "ETL_DLQ_BODIES"}
    secret = tmp_path / "secret-id"
    secret.write_text("s")
    return {
        **env,
        "ETL_DLQ_SEAL_VAULT_ADDR": "https://bao:8200",
        "ETL_DLQ_SEAL_ROLE_ID": "r",
        "ETL_DLQ_SEAL_SECRET_ID_FILE": str(secret),
        "ETL_MAX_BODY_BYTES": str(max_body_bytes),
    }


def test_a_max_body_size_whose_sealed_envelope_exceeds_sqs_is_refused(tmp_path: Path) -> None:
    largest = largest_sealable_body_bytes(KEY)
    assert EtlConfig.from_env(sealed_env(tmp_path, largest)).max_body_bytes == largest
    with pytest.raises(ConfigError, match=rf"ETL_MAX_BODY_BYTES must be at most {largest} .* 256 KiB"):
        EtlConfig.from_env(sealed_env(tmp_path, largest + 1))
    discard = {**minimal_etl_env(tmp_path, "http://127.0.0.1:9/1/q"), "ETL_MAX_BODY_BYTES": "262144"}
    assert EtlConfig.from_env(discard).max_body_bytes == 262_144  # nothing sealed: envelopes stay small


def test_the_etl_refuses_to_start_with_such_a_max_body_size(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "etl_service", "run"],
        env={"PATH": "/usr/bin:/bin", **sealed_env(tmp_path, 262_144)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2  # invalid settings: before any dependency is contacted
    assert "ETL_MAX_BODY_BYTES must be at most" in result.stderr
