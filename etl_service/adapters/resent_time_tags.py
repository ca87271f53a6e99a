"""Transit HMAC tags of re-sent dead letters' sent times: who may make them, and checking them.

Two keys vouch for a re-sent time. The dead-letter key: the DLQ operator's token may `update`
`transit/hmac/<dead-letter key>` (tokenvault-dlq-operator.hcl: `dead-letters resend`, and
`redrive` for the SentTimestamp SQS kept on each DLQ copy it takes back), the ETL's only
`transit/verify/<dead-letter key>`. The take-back key (TAKE_BACK_TIME_KEY, an HMAC-only key):
the ETL's may `hmac` and `verify` with it (tokenvault-etl.hcl), to vouch for the SentTimestamp SQS
itself kept on a DLQ copy its take-back sends back; no one else may use it. A producer holds no
Vault token at all: it can make neither tag.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import hvac
import hvac.exceptions
import requests

from etl_service.adapters.transit_batches import request_chunks
from etl_service.errors import DependencyDown, Misconfigured

TAKE_BACK_TIME_KEY = "tokenvault-take-back-times"
"""The ETL's Transit key (type hmac) vouching for a taken-back message's SentTimestamp (review 20, R20-13)."""
PROBE_TAG = "vault:v1:" + base64.b64encode(bytes(32)).decode()
"""A well-formed tag no key made: verifying it proves the policy allows `verify` (answer: not valid)."""


def verify_in_batches(post: Callable[[list[dict[str, str]]], Any], claims: Sequence[tuple[bytes, str]]) -> list[bool]:
    """For each (input, tag), whether Transit says the tag is valid; `post` sends one `batch_input` to verify.

    An item Transit answers with an error (a tag of a version the key does not have, say) is not
    valid; a whole batch refused as a bad request (every item bad) is none valid.
    """
    valid: list[bool] = []
    batch = [{"input": base64.b64encode(data).decode(), "hmac": tag} for data, tag in claims]
    for chunk in request_chunks(batch):
        try:
            results = post(list(chunk))["data"]["batch_results"]
        except hvac.exceptions.InvalidRequest:
            results = [{}] * len(chunk)
        if len(results) != len(chunk):
            raise DependencyDown("OpenBao answered an incomplete batch verify", "openbao")
        valid += [result.get("valid") is True for result in results]
    return valid


def hmac_in_batches(post: Callable[[list[dict[str, str]]], Any], inputs: Sequence[bytes]) -> list[str]:
    """The Transit HMAC tag of each input, in order; `post` sends one `batch_input` to `transit/hmac`.

    DependencyDown when OpenBao answers a batch incompletely or with an error for an item (every
    input is valid base64: an error is OpenBao's, not the input's).
    """
    tags: list[str] = []
    for chunk in request_chunks([{"input": base64.b64encode(data).decode()} for data in inputs]):
        results = post(list(chunk))["data"]["batch_results"]
        made = [str(result.get("hmac", "")) for result in results if not result.get("error")]
        if len(made) != len(chunk) or not all(tag.startswith("vault:v") for tag in made):
            raise DependencyDown("OpenBao answered an incomplete batch hmac", "openbao")
        tags += made
    return tags


RESENT_TIME_USES = {
    "verify": "checks the original sent time a re-sent dead letter carries",
    "hmac": "vouches for the SentTimestamp SQS kept on a message a take-back sends back",
}
"""What each Transit action on a re-sent time is for: the ETL's errors name it."""


class TransitTimeTags:
    """The ETL's tags of re-sent times: `verify` under both keys, `hmac` under its take-back key only.

    `post(action, key, batch_input)` sends one Transit request under the ETL's login
    (TransitSealer._transit_post); it raises InvalidRequest when OpenBao refuses the batch as a whole.
    """

    def __init__(
        self, post: Callable[[str, str, list[dict[str, str]]], Any], dead_letter_key: str | None, take_back_key: str
    ) -> None:
        self._post = post
        self._dead_letter_key = dead_letter_key
        self.take_back_key = take_back_key

    def verify_tags(self, claims: Sequence[tuple[bytes, str]]) -> list[bool]:
        """ResentTimeVerifier: whether each tag is the take-back key's or the dead-letter key's HMAC of its input.

        Under the take-back key first (run mode's take-backs are the common case), then the claims
        not valid there under the dead-letter key (`dead-letters resend`'s): one call per key, the
        second only when some claim is no take-back's.
        """
        valid = verify_in_batches(lambda batch: self._post("verify", self.take_back_key, batch), claims)
        rest = [index for index, ok in enumerate(valid) if not ok]
        if rest and self._dead_letter_key:
            key = self._dead_letter_key
            again = verify_in_batches(lambda batch: self._post("verify", key, batch), [claims[i] for i in rest])
            for index, ok in zip(rest, again, strict=True):
                valid[index] = ok
        return valid

    def tag_take_back_times(self, inputs: Sequence[bytes]) -> list[str]:
        """The take-back key's HMAC of each tag input (domain/resent_times.tag_input), in order.

        Misconfigured when OpenBao has no such key or the policy refuses `hmac`, DependencyDown when it is down.
        """
        try:
            return hmac_in_batches(lambda batch: self._post("hmac", self.take_back_key, batch), inputs)
        except hvac.exceptions.InvalidRequest as error:
            raise Misconfigured(
                f"OpenBao cannot tag take-back times with Transit key {self.take_back_key!r} ({error}): create it"
                f" (`vault write -f transit/keys/{self.take_back_key} type=hmac key_size=32`, docs/production.md)",
                "openbao",
            ) from None

    def check(self) -> None:
        """At start: verify a tag no key made (both keys' `verify` allowed), tag a probe and verify that tag."""
        data = b"tokenvault-etl start-up probe"
        self.verify_tags([(data, PROBE_TAG)])
        [tag] = self.tag_take_back_times([data])
        if self.verify_tags([(data, tag)]) != [True]:
            raise Misconfigured(
                f"OpenBao did not verify a tag just made with Transit key {self.take_back_key!r}", "openbao"
            )


def tag_resent_time(address: str, token: str, key_name: str, data: bytes, mount: str = "transit") -> str:
    """The Transit HMAC-SHA256 of `data` under `key_name`, as the DLQ operator whose token is given.

    Misconfigured when OpenBao refuses (the token's policy must allow update on
    transit/hmac/<key>), DependencyDown when it is unreachable.
    """
    client = hvac.Client(url=address, token=token, timeout=5)
    with _as_operator(key_name, mount, "re-sent"):
        response = client.secrets.transit.generate_hmac(
            name=key_name, hash_input=base64.b64encode(data).decode(), algorithm="sha2-256", mount_point=mount
        )
    return str(response["data"]["hmac"])


def tag_resent_times(
    address: str, token: str, key_name: str, inputs: Sequence[bytes], mount: str = "transit"
) -> list[str]:
    """tag_resent_time of each input, in order, in bounded batches (request_chunks): `dead-letters redrive`'s tagger.

    The same HMAC (SHA-256, the key's newest version) the ETL verifies; errors as tag_resent_time's.
    """
    client = hvac.Client(url=address, token=token, timeout=5)
    path = f"/v1/{mount}/hmac/{key_name}"
    with _as_operator(key_name, mount, "taken back"):
        return hmac_in_batches(lambda batch: client.adapter.post(path, json={"batch_input": batch}), inputs)


@contextlib.contextmanager
def _as_operator(key_name: str, mount: str, done: str) -> Iterator[None]:
    """OpenBao's errors for the DLQ operator's HMAC as the ETL's kinds; `done` says what was not done."""
    try:
        yield
    except hvac.exceptions.Forbidden:
        raise Misconfigured(
            f"OpenBao refused to vouch for the original sent time with Transit key {key_name!r}: the DLQ operator's"
            f" policy must allow update on {mount}/hmac/{key_name} (config/vault/tokenvault-dlq-operator.hcl);"
            f" nothing was {done}",
            "openbao",
        ) from None
    except (hvac.exceptions.VaultError, requests.RequestException) as error:
        raise DependencyDown(f"OpenBao unavailable: {type(error).__name__}; nothing was {done}", "openbao") from None
