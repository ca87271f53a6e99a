"""The dead-letter tokens cannot use the vault service's keys, against the session's real OpenBao.

The ETL's AppRole token (config/vault/tokenvault-etl.hcl) may only encrypt, rewrap and verify
with the dead-letter key (rewrap proves a dead letter moved back to the source queue genuine, and
returns no plaintext; verify checks a re-sent letter's time tag and makes none), and the DLQ
operator's token (tokenvault-dlq-operator.hcl) may only decrypt and HMAC with it (the tag)
(threat model, *The DLQ and the ETL*; README's stack.env table). The ETL's take-back key is its
alone: it may hmac and verify with it, and no other identity - a producer without any token, the
operator, the vault service, the security team - may make a tag with it (review 20, R20-13).
Each token is obtained as the stack provisions it (the ETL's AppRole login with DLQ_SEAL_ROLE_ID
and its secret id file, from 127.0.0.1 as the ETL; the operator's token file) and shown to work
for its one allowed act; then every other act below is sent to OpenBao as a well-formed request
(one that would succeed under a broader policy) and must be refused with 403.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from devstack.openbao import DEAD_LETTER_KEY, ETL_ROLE, KEK_NAME, SERVICE_ROLE, SIGNING_KEY_NAME, TAKE_BACK_TIME_KEY
from etl_service.adapters.transit_sealer import open_sealed
from tokenvault_common.login_row_signatures import LOGIN_ROWS_KEY, PublicKeys

PROBE = base64.b64encode(b"not a real login event").decode()
KEK_CIPHERTEXT = "<a ciphertext under the KEK>"
SEALED_BODY = "<a dead letter sealed by the ETL>"
EXPORT_TYPE = {
    KEK_NAME: "encryption-key",
    SIGNING_KEY_NAME: "signing-key",
    DEAD_LETTER_KEY: "encryption-key",
    TAKE_BACK_TIME_KEY: "hmac-key",
    LOGIN_ROWS_KEY: "signing-key",
}


@dataclass(frozen=True)
class Act:
    """One request to OpenBao: method, path under /v1, JSON body (placeholders filled in per stack)."""

    method: str
    path: str
    body: dict[str, Any]


def _key_management(key: str) -> dict[str, Act]:
    """Reading, exporting, backing up, reconfiguring, rotating, trimming and deleting `key`."""
    return {
        f"read-{key}": Act("GET", f"transit/keys/{key}", {}),
        f"export-{key}": Act("GET", f"transit/export/{EXPORT_TYPE[key]}/{key}", {}),
        f"backup-{key}": Act("GET", f"transit/backup/{key}", {}),
        f"config-{key}": Act("POST", f"transit/keys/{key}/config", {"min_decryption_version": 1}),
        f"rotate-{key}": Act("POST", f"transit/keys/{key}/rotate", {}),
        f"trim-{key}": Act("POST", f"transit/keys/{key}/trim", {"min_available_version": 1}),
        f"delete-{key}": Act("DELETE", f"transit/keys/{key}", {}),
    }


SHARED_REFUSALS: dict[str, Act] = {
    # the vault service's KEK: what unwraps every data key
    "decrypt-kek": Act("POST", f"transit/decrypt/{KEK_NAME}", {"ciphertext": KEK_CIPHERTEXT}),
    "datakey-plaintext-kek": Act("POST", f"transit/datakey/plaintext/{KEK_NAME}", {}),
    "datakey-wrapped-kek": Act("POST", f"transit/datakey/wrapped/{KEK_NAME}", {}),
    "rewrap-kek": Act("POST", f"transit/rewrap/{KEK_NAME}", {"ciphertext": KEK_CIPHERTEXT}),
    "encrypt-kek": Act("POST", f"transit/encrypt/{KEK_NAME}", {"plaintext": PROBE}),
    "hmac-kek": Act("POST", f"transit/hmac/{KEK_NAME}", {"input": PROBE}),
    # the audit signing key: a signed checkpoint of a rewritten chain
    "sign-audit-key": Act("POST", f"transit/sign/{SIGNING_KEY_NAME}", {"input": PROBE}),
    **_key_management(KEK_NAME),
    **_key_management(SIGNING_KEY_NAME),
    **_key_management(DEAD_LETTER_KEY),
    **_key_management(LOGIN_ROWS_KEY),
    "list-keys": Act("LIST", "transit/keys", {}),
    "create-key": Act("POST", "transit/keys/tokenvault-planted", {}),
    # becoming the vault service, or widening one's own policy
    "service-secret-id": Act("POST", f"auth/approle/role/{SERVICE_ROLE}/secret-id", {}),
    "service-role-id": Act("GET", f"auth/approle/role/{SERVICE_ROLE}/role-id", {}),
    "service-token": Act("POST", "auth/token/create", {"policies": ["tokenvault-service"]}),
    "write-policy": Act("POST", "sys/policies/acl/tokenvault-planted", {"policy": 'path "transit/*" {}'}),
}
ETL_REFUSALS: dict[str, Act] = {
    **SHARED_REFUSALS,
    "decrypt-dead-letter": Act("POST", f"transit/decrypt/{DEAD_LETTER_KEY}", {"ciphertext": SEALED_BODY}),
    "datakey-dead-letter-key": Act("POST", f"transit/datakey/plaintext/{DEAD_LETTER_KEY}", {}),
    # vouching for a re-sent letter's sent time is the operator's: the ETL may only verify a tag
    "hmac-dead-letter-key": Act("POST", f"transit/hmac/{DEAD_LETTER_KEY}", {"input": PROBE}),
    "etl-secret-id": Act("POST", f"auth/approle/role/{ETL_ROLE}/secret-id", {}),
}
OPERATOR_REFUSALS: dict[str, Act] = {
    **SHARED_REFUSALS,
    "encrypt-dead-letter": Act("POST", f"transit/encrypt/{DEAD_LETTER_KEY}", {"plaintext": PROBE}),
    "rewrap-dead-letter": Act("POST", f"transit/rewrap/{DEAD_LETTER_KEY}", {"ciphertext": SEALED_BODY}),
    # the ETL's signature on the rows it loads is the ETL's alone (attack 41, A41-1)
    "sign-login-rows": Act("POST", f"transit/sign/{LOGIN_ROWS_KEY}", {"input": PROBE}),
}


@dataclass(frozen=True)
class DeadLetterTokens:
    """The two tokens, shown to work for what they may do, and real ciphertexts to aim at."""

    etl: hvac.Client
    operator: hvac.Client
    kek_ciphertext: str
    sealed_body: str


@pytest.fixture(scope="module")
def tokens(stack_env: dict[str, str]) -> Iterator[DeadLetterTokens]:
    address = stack_env["VAULT_ADDR"]
    etl = hvac.Client(url=address, timeout=5)  # as TransitSealer logs in, from 127.0.0.1
    secret_id = Path(stack_env["DLQ_SEAL_SECRET_ID_FILE"]).read_text().strip()
    etl.auth.approle.login(role_id=stack_env["DLQ_SEAL_ROLE_ID"], secret_id=secret_id, use_token=True)
    sealed = etl.secrets.transit.encrypt_data(name=DEAD_LETTER_KEY, plaintext=PROBE)["data"]["ciphertext"]
    rewrapped = etl.secrets.transit.rewrap_data(name=DEAD_LETTER_KEY, ciphertext=sealed)["data"]  # its second act
    assert rewrapped["ciphertext"].startswith("vault:v") and "plaintext" not in rewrapped
    operator_token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    opened = open_sealed(address, operator_token, DEAD_LETTER_KEY, sealed)  # the operator's one act
    assert opened == base64.b64decode(PROBE).decode()
    root = hvac.Client(url=address, token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    kek_ciphertext = root.secrets.transit.encrypt_data(name=KEK_NAME, plaintext=PROBE)["data"]["ciphertext"]
    yield DeadLetterTokens(etl, hvac.Client(url=address, token=operator_token, timeout=5), kek_ciphertext, sealed)


def _send(client: hvac.Client, act: Act, tokens: DeadLetterTokens) -> Any:
    filled = {
        name: {KEK_CIPHERTEXT: tokens.kek_ciphertext, SEALED_BODY: tokens.sealed_body}.get(value, value)
        if isinstance(value, str)
        else value
        for name, value in act.body.items()
    }
    return client.adapter.request(act.method, f"/v1/{act.path}", json=filled or None)


@pytest.mark.parametrize("act", list(ETL_REFUSALS.values()), ids=list(ETL_REFUSALS))
def test_the_etl_s_token_cannot_use_or_manage_the_vault_s_keys(tokens: DeadLetterTokens, act: Act) -> None:
    with pytest.raises(hvac.exceptions.Forbidden):
        _send(tokens.etl, act, tokens)


@pytest.mark.parametrize("act", list(OPERATOR_REFUSALS.values()), ids=list(OPERATOR_REFUSALS))
def test_the_dlq_operator_s_token_may_only_open_dead_letters(tokens: DeadLetterTokens, act: Act) -> None:
    with pytest.raises(hvac.exceptions.Forbidden):
        _send(tokens.operator, act, tokens)


def test_the_etl_s_rewrap_proves_a_ciphertext_without_opening_it(tokens: DeadLetterTokens) -> None:
    """Rewrap fails on a forged ciphertext and on one under another key, and never answers plaintext."""
    forged = "vault:v1:" + base64.b64encode(b'{"ip": "203.0.113.7", "device_id": "att-dev-0001"}').decode()
    answer = tokens.etl.secrets.transit.rewrap_data(
        name=DEAD_LETTER_KEY,
        ciphertext="",
        batch_input=[{"ciphertext": c} for c in (tokens.sealed_body, forged, tokens.kek_ciphertext)],
    )
    results = answer["data"]["batch_results"]
    assert [bool(r.get("error")) for r in results] == [False, True, True]
    assert not [r for r in results if "plaintext" in r]


def test_the_operator_tags_a_re_sent_time_and_the_etl_can_only_verify_it(tokens: DeadLetterTokens) -> None:
    """`resend`'s tag (transit/hmac) is the operator's to make; the ETL's verify says valid or not, never a tag."""
    tag = tokens.operator.secrets.transit.generate_hmac(name=DEAD_LETTER_KEY, hash_input=PROBE)["data"]["hmac"]
    other = base64.b64encode(b"another body").decode()
    answer = tokens.etl.adapter.post(
        f"/v1/transit/verify/{DEAD_LETTER_KEY}",
        json={"batch_input": [{"input": PROBE, "hmac": tag}, {"input": other, "hmac": tag}]},
    )
    assert [r.get("valid") is True for r in answer["data"]["batch_results"]] == [True, False]
    assert not [r for r in answer["data"]["batch_results"] if "hmac" in r]


def test_only_the_etl_tags_a_taken_back_time_and_its_tag_verifies(
    stack_env: dict[str, str], tokens: DeadLetterTokens
) -> None:
    """Review 20, R20-13: the ETL vouches for a taken-back message's SentTimestamp with a key no one else may use.

    Its tag verifies (so the ETL believes the time); every other identity is refused `hmac` with the
    key, so none can make a tag the ETL accepts, and the ETL cannot manage the key.
    """
    address, path = stack_env["VAULT_ADDR"], f"/v1/transit/hmac/{TAKE_BACK_TIME_KEY}"
    tag = tokens.etl.adapter.post(path, json={"input": PROBE})["data"]["hmac"]
    verify = tokens.etl.adapter.post(f"/v1/transit/verify/{TAKE_BACK_TIME_KEY}", json={"input": PROBE, "hmac": tag})
    assert verify["data"]["valid"] is True
    root = hvac.Client(url=address, token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    service = root.auth.token.create(policies=["tokenvault-service"], ttl="5m")["auth"]["client_token"]
    others = {
        "producer (no token)": hvac.Client(url=address, timeout=5),
        "dlq operator": tokens.operator,
        "vault service": hvac.Client(url=address, token=service, timeout=5),
        "security team": hvac.Client(
            url=address, token=Path(stack_env["VAULT_SECURITY_TOKEN_FILE"]).read_text().strip(), timeout=5
        ),
    }
    hmac = Act("POST", path.removeprefix("/v1/"), {"input": PROBE})
    assert [name for name, client in others.items() if not _refused(client, hmac, tokens)] == []
    management = _key_management(TAKE_BACK_TIME_KEY)
    assert [name for name, act in management.items() if not _refused(tokens.etl, act, tokens)] == []


def _refused(client: hvac.Client, act: Act, tokens: DeadLetterTokens) -> bool:
    """Whether OpenBao refuses `act` to `client` (403)."""
    try:
        _send(client, act, tokens)
    except hvac.exceptions.Forbidden:
        return True
    return False


def test_only_the_etl_signs_login_rows_and_the_public_keys_file_verifies_its_signature(
    stack_env: dict[str, str], tokens: DeadLetterTokens
) -> None:
    """Attack 41, A41-1: the ETL signs the digests of the rows it loads with tokenvault-login-rows (sign only).

    Its signature verifies offline with the public keys the stack wrote for `tokenvault erase` (a read of the key,
    public keys only: not exportable); every other identity is refused `sign` with the key, so the database owner
    holding any of them cannot make rows he rewrote verify; the ETL cannot manage, read or export the key.
    """
    address, path = stack_env["VAULT_ADDR"], f"/v1/transit/sign/{LOGIN_ROWS_KEY}"
    signature = tokens.etl.adapter.post(path, json={"input": PROBE})["data"]["signature"]
    keys = PublicKeys.parse(Path(stack_env["LOGIN_ROW_KEYS_FILE"]).read_text())
    assert keys.verify(signature, base64.b64decode(PROBE))
    assert not keys.verify(signature, b"another list of rows")
    root = hvac.Client(url=address, token=Path(stack_env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    assert root.adapter.get(f"/v1/transit/keys/{LOGIN_ROWS_KEY}")["data"]["exportable"] is False
    service = root.auth.token.create(policies=["tokenvault-service"], ttl="5m")["auth"]["client_token"]
    others = {
        "no token": hvac.Client(url=address, timeout=5),
        "dlq operator": tokens.operator,
        "vault service": hvac.Client(url=address, token=service, timeout=5),
        "security team": hvac.Client(
            url=address, token=Path(stack_env["VAULT_SECURITY_TOKEN_FILE"]).read_text().strip(), timeout=5
        ),
    }
    sign = Act("POST", path.removeprefix("/v1/"), {"input": PROBE})
    assert [name for name, client in others.items() if not _refused(client, sign, tokens)] == []
    management = _key_management(LOGIN_ROWS_KEY)
    assert [name for name, act in management.items() if not _refused(tokens.etl, act, tokens)] == []
