"""Transit HMAC tags of re-sent dead letters' sent times: the operator makes them, the ETL checks them.

The DLQ operator's token may `update` `transit/hmac/<dead-letter key>` (tokenvault-dlq-operator.hcl);
the ETL's only `transit/verify/<dead-letter key>` (tokenvault-etl.hcl), which answers valid or
not and never a tag, so neither the ETL nor a producer (no Vault token at all) can vouch for a time.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

import hvac
import hvac.exceptions
import requests

from etl_service.errors import DependencyDown, Misconfigured

VERIFY_BATCH = 250
"""Claims per `transit/verify` call (OpenBao's default listener refuses ~500+ JSON strings)."""
PROBE_TAG = "vault:v1:" + base64.b64encode(bytes(32)).decode()
"""A well-formed tag no key made: verifying it proves the policy allows `verify` (answer: not valid)."""


def verify_in_batches(post: Callable[[list[dict[str, str]]], Any], claims: Sequence[tuple[bytes, str]]) -> list[bool]:
    """For each (input, tag), whether Transit says the tag is valid; `post` sends one `batch_input` to verify.

    An item Transit answers with an error (a tag of a version the key does not have, say) is not
    valid; a whole batch refused as a bad request (every item bad) is none valid.
    """
    valid: list[bool] = []
    for start in range(0, len(claims), VERIFY_BATCH):
        chunk = claims[start : start + VERIFY_BATCH]
        batch = [{"input": base64.b64encode(data).decode(), "hmac": tag} for data, tag in chunk]
        try:
            results = post(batch)["data"]["batch_results"]
        except hvac.exceptions.InvalidRequest:
            results = [{}] * len(chunk)
        if len(results) != len(chunk):
            raise DependencyDown("OpenBao answered an incomplete batch verify", "openbao")
        valid += [result.get("valid") is True for result in results]
    return valid


def tag_resent_time(address: str, token: str, key_name: str, data: bytes, mount: str = "transit") -> str:
    """The Transit HMAC-SHA256 of `data` under `key_name`, as the DLQ operator whose token is given.

    Misconfigured when OpenBao refuses (the token's policy must allow update on
    transit/hmac/<key>), DependencyDown when it is unreachable.
    """
    client = hvac.Client(url=address, token=token, timeout=5)
    try:
        response = client.secrets.transit.generate_hmac(
            name=key_name, hash_input=base64.b64encode(data).decode(), algorithm="sha2-256", mount_point=mount
        )
    except hvac.exceptions.Forbidden:
        raise Misconfigured(
            f"OpenBao refused to vouch for the original sent time with Transit key {key_name!r}: the DLQ operator's"
            f" policy must allow update on {mount}/hmac/{key_name} (config/vault/tokenvault-dlq-operator.hcl);"
            " nothing was re-sent",
            "openbao",
        ) from None
    except (hvac.exceptions.VaultError, requests.RequestException) as error:
        raise DependencyDown(f"OpenBao unavailable: {type(error).__name__}; nothing was re-sent", "openbao") from None
    return str(response["data"]["hmac"])
