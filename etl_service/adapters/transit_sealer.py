"""Sealing dead-letter bodies with OpenBao/Vault Transit: the ETL may encrypt, only an operator may decrypt.

The ETL logs in with an AppRole of its own whose policy (config/vault/tokenvault-etl.hcl) allows
`transit/encrypt/<key>` and `transit/rewrap/<key>` and nothing else: it cannot decrypt what it
sealed, nor touch the vault service's keys. `rewrap` proves that an envelope moved back to the
source queue holds a genuine ciphertext under the key (service/returned_letters.py): it fails on
any other and returns only a new ciphertext, never the plaintext. An operator token
(config/vault/tokenvault-dlq-operator.hcl) may decrypt; OpenBao's audit device records every
decrypt. The key never leaves Transit. The same login checks re-sent times' tags (`verify`, both
keys) and tags the times its take-backs send back (`hmac`, its take-back key only:
resent_time_tags.py), and signs each load batch's list of row digests (`sign`, its ed25519 key
tokenvault-login-rows only: attack 41, A41-1; tokenvault_common/login_row_signatures.py).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests

from etl_service.adapters.resent_time_tags import RESENT_TIME_USES, TAKE_BACK_TIME_KEY, TransitTimeTags
from etl_service.adapters.transit_batches import request_chunks
from etl_service.errors import DependencyDown, EtlError, Misconfigured
from etl_service.service.sealing import (
    NOT_KEPT_TOO_LARGE,
    dead_letter_body,
    largest_sealable_body_bytes,
    longest_claim_chars,
    minted_plaintext,
    recordable_tokens,
)
from tokenvault_common.login_row_signatures import LOGIN_ROWS_KEY

log = logging.getLogger(__name__)

DEAD_LETTER_KEY = "tokenvault-dead-letters"


class TransitSealer:
    """Implements BodySealer: Transit `encrypt` and `rewrap` calls bounded by transit_batches.request_chunks."""

    def __init__(
        self,
        address: str,
        role_id: str,
        secret_id_file: Path,
        key_name: str = DEAD_LETTER_KEY,
        mount: str = "transit",
        timeout: float = 5.0,
        take_back_key: str = TAKE_BACK_TIME_KEY,
        login_rows_key: str = LOGIN_ROWS_KEY,
    ) -> None:
        self.key_name: str | None = key_name
        self.login_rows_key = login_rows_key
        self.take_back_key = take_back_key
        self._role_id = role_id
        self._secret_id_file = secret_id_file
        self._mount = mount
        self._client = hvac.Client(url=address, timeout=timeout)
        self._lock = threading.Lock()
        self._time_tags = TransitTimeTags(self._transit_post, key_name, take_back_key)

    def seal(self, bodies: Sequence[str], minted: Sequence[Sequence[str]] | None = None) -> list[str]:
        """The DLQ envelope of each body, sealed under the dead-letter key.

        A body too large for its envelope to fit an SQS message (sealing.largest_sealable_body_bytes)
        is not kept: its envelope says so (NOT_KEPT_TOO_LARGE), and nothing of it is sent to Transit.
        `minted[i]`, the tokens the vault minted for body i's message, is sealed in the same Transit
        calls and recorded in its envelope (`minted_tokens`, sealing.py) when the body is kept.
        """
        raw = [body.encode("utf-8", "surrogatepass") for body in bodies]
        largest = largest_sealable_body_bytes(self.key_name)
        keep = [index for index, body in enumerate(raw) if len(body) <= largest]
        if len(keep) < len(raw):
            log.warning("dead-letter bodies too large to seal: not kept", extra={"bodies": len(raw) - len(keep)})
        tokens = {i: kept for i in keep if minted and (kept := recordable_tokens(minted[i]))}
        batch = [{"plaintext": base64.b64encode(raw[index]).decode()} for index in keep]
        batch += [{"plaintext": base64.b64encode(minted_plaintext(t).encode()).decode()} for t in tokens.values()]
        sealed: list[str] = []
        for chunk in request_chunks(batch):
            sealed += self._encrypt(chunk)
        sealed_tokens = dict(zip(tokens, sealed[len(keep) :], strict=True))
        envelopes = [dead_letter_body(None, NOT_KEPT_TOO_LARGE, None)] * len(bodies)
        for index, text in zip(keep, sealed[: len(keep)], strict=True):
            envelopes[index] = dead_letter_body(text, None, self.key_name, sealed_tokens.get(index))
        return envelopes

    def authentic(self, ciphertexts: Sequence[str]) -> frozenset[str]:
        """Those of `ciphertexts` that Transit authenticates under the dead-letter key (`rewrap`: no plaintext).

        A forged one, one under another key, or one under a key version below the key's
        min_decryption_version is not; nor, without asking Transit, one longer than an envelope in
        any SQS message holds (sealing.longest_claim_chars). DependencyDown when OpenBao is
        unreachable, Misconfigured when the policy or the key is wrong.
        """
        longest = longest_claim_chars(self.key_name)
        # Measured as sent (JSON): a claim of characters JSON escapes could reach six times its
        # length; a genuine ciphertext (`vault:v<n>:` and base64) has none to escape.
        claims = [text for text in ciphertexts if len(json.dumps(text)) <= longest + 2]
        if len(claims) < len(ciphertexts):
            log.info(
                "claimed ciphertexts longer than any SQS message holds: not proven, not sent to OpenBao",
                extra={"claims": len(ciphertexts) - len(claims)},
            )
        proven: set[str] = set()
        for chunk in request_chunks([{"ciphertext": text} for text in claims]):
            rewrapped = self._rewraps(chunk)
            proven.update(item["ciphertext"] for item, ok in zip(chunk, rewrapped, strict=True) if ok)
        return frozenset(proven)

    def verify_tags(self, claims: Sequence[tuple[bytes, str]]) -> list[bool]:
        """ResentTimeVerifier: whether each tag is the take-back key's or the dead-letter key's HMAC of its input."""
        return self._time_tags.verify_tags(claims)

    def tag_take_back_times(self, inputs: Sequence[bytes]) -> list[str]:
        """The take-back key's Transit HMAC of each tag input, in order (TransitTimeTags.tag_take_back_times)."""
        return self._time_tags.tag_take_back_times(inputs)

    def sign_login_rows(self, message: bytes) -> str:
        """RowSigner: the login-rows key's ed25519 signature of `message` (`vault:vN:<base64>`), one Transit call.

        Misconfigured when OpenBao refuses (the policy lacks transit/sign on the key, the key is missing or
        not a signing key), DependencyDown when it does not answer: the batch is then released or postponed,
        never loaded unsigned.
        """
        key = self.login_rows_key
        path = f"/v1/{self._mount}/sign/{key}"
        body = {"input": base64.b64encode(message).decode()}
        why = ", which signs the rows it loads into user_logins (attack 41, A41-1)"
        try:
            response = self._with_login(lambda: self._client.adapter.post(path, json=body), "sign", why, key)
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath, hvac.exceptions.UnsupportedOperation):
            raise Misconfigured(
                f"OpenBao cannot sign the rows it loads with Transit key {key!r} (is it there, an ed25519 key?)",
                "openbao",
            ) from None
        except (hvac.exceptions.VaultError, requests.RequestException) as error:
            raise DependencyDown(
                f"OpenBao unavailable for signing the rows it loads: {type(error).__name__}", "openbao"
            ) from None
        signature = str(((response or {}).get("data") or {}).get("signature", ""))
        if not signature.startswith("vault:v"):
            raise DependencyDown("OpenBao answered no signature for the rows to load", "openbao")
        return signature

    def ready(self) -> None:
        """The dependency gate's probe of OpenBao: one signature of a fixed probe (what every batch's load needs).

        DependencyDown when OpenBao does not answer, Misconfigured when it refuses. Without it, the gate reopened at
        its first probe during an OpenBao outage and every receive count was spent on it (chaos 49, C49-4).
        """
        self.sign_login_rows(b"tokenvault-etl dependency probe")

    def check_access(self) -> None:
        """At start: log in, seal a probe and prove it, sign a probe (login-rows key), TransitTimeTags.check.

        Misconfigured or DependencyDown naming what failed.
        """
        [envelope] = self.seal(["tokenvault-etl start-up probe"])
        probe = str(json.loads(envelope)["sealed_body"])
        if probe not in self.authentic([probe]):
            raise Misconfigured(
                f"OpenBao did not authenticate a ciphertext just sealed with Transit key {self.key_name!r}", "openbao"
            )
        self._time_tags.check()
        self.sign_login_rows(b"tokenvault-etl start-up probe")

    def _transit_post(self, action: str, key: str, batch: list[dict[str, str]]) -> Any:
        """One Transit `action` (verify, hmac) of `batch` with `key` under the ETL's login; InvalidRequest passes."""
        path = f"/v1/{self._mount}/{action}/{key}"
        why = f", which {RESENT_TIME_USES[action]}"
        try:
            return self._with_login(
                lambda: self._client.adapter.post(path, json={"batch_input": batch}), action, why, key
            )
        except hvac.exceptions.InvalidRequest:
            raise
        except (hvac.exceptions.VaultError, requests.RequestException) as error:
            raise DependencyDown(
                f"OpenBao unavailable for re-sent times ({action}): {type(error).__name__}", "openbao"
            ) from None

    def _rewraps(self, batch: Sequence[dict[str, str]]) -> list[bool]:
        """For each `{"ciphertext": ...}` item, whether Transit rewrapped it (so authenticated it) under the key."""
        try:
            response = self._with_login(
                lambda: self._client.secrets.transit.rewrap_data(
                    name=self.key_name, ciphertext="", batch_input=list(batch), mount_point=self._mount
                ),
                "rewrap",
                ", which proves a dead letter moved back to the source queue genuine",
            )
        except hvac.exceptions.InvalidRequest as error:
            if any("not found" in str(e) for e in error.errors or []):
                raise Misconfigured(
                    f"OpenBao has no Transit key {self.key_name!r} to prove dead letters with", "openbao"
                ) from None
            return [False] * len(batch)  # 400 only when every item failed (else per item: tested)
        except hvac.exceptions.InvalidPath as error:
            raise Misconfigured(f"OpenBao cannot rewrap with key {self.key_name!r}: {error}", "openbao") from None
        except (hvac.exceptions.VaultError, requests.RequestException) as error:
            raise DependencyDown(
                f"OpenBao unavailable for proving dead letters: {type(error).__name__}", "openbao"
            ) from None
        return _rewrapped(response, len(batch))

    def _encrypt(self, batch: Sequence[dict[str, str]]) -> list[str]:
        """The ciphertext of each `{"plaintext": <base64>}` item, in order."""
        try:
            response = self._with_login(
                lambda: self._client.secrets.transit.encrypt_data(
                    name=self.key_name, plaintext="", batch_input=list(batch), mount_point=self._mount
                ),
                "encrypt",
            )
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath) as error:
            raise Misconfigured(
                f"OpenBao cannot seal dead letters with key {self.key_name!r}: {error}", "openbao"
            ) from None
        except (hvac.exceptions.VaultError, requests.RequestException) as error:
            raise DependencyDown(f"OpenBao unavailable for sealing: {type(error).__name__}", "openbao") from None
        return _ciphertexts(response, len(batch))

    def _with_login(self, call: Callable[[], Any], action: str, why: str = "", key: str | None = None) -> Any:
        """`call` under the ETL's token; refused, once more after a fresh login (a token past its TTL).

        Refused again: the policy, not the token (Misconfigured naming the key, default the dead-letter key).
        """
        self._ensure_login(force=False)
        try:
            return call()
        except hvac.exceptions.Forbidden:
            self._ensure_login(force=True)
        try:
            return call()
        except hvac.exceptions.Forbidden:
            raise Misconfigured(
                f"OpenBao refused to {action} with Transit key {key or self.key_name!r}: the ETL's AppRole policy"
                f" must allow update on transit/{action}/<key> (config/vault/tokenvault-etl.hcl){why}",
                "openbao",
            ) from None

    def _ensure_login(self, force: bool) -> None:
        with self._lock:
            if self._client.token and not force:
                return
            try:
                secret_id = self._secret_id_file.read_text().strip()
            except OSError as error:
                raise Misconfigured(f"cannot read ETL_DLQ_SEAL_SECRET_ID_FILE: {error.strerror}", "openbao") from None
            try:
                auth = self._client.auth.approle.login(role_id=self._role_id, secret_id=secret_id, use_token=True)
            except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden) as error:
                raise Misconfigured(
                    f"OpenBao refused the ETL's AppRole login (ETL_DLQ_SEAL_ROLE_ID / secret id): {error}", "openbao"
                ) from None
            except (hvac.exceptions.VaultError, requests.RequestException) as error:
                raise DependencyDown(f"OpenBao unavailable for login: {type(error).__name__}", "openbao") from None
            log.info("logged in to OpenBao for sealing dead letters", extra={"ttl_s": auth["auth"]["lease_duration"]})


def _rewrapped(response: Any, expected: int) -> list[bool]:
    results = response["data"]["batch_results"]
    if len(results) != expected:
        raise DependencyDown("OpenBao answered an incomplete batch rewrap", "openbao")
    return [not r.get("error") and str(r.get("ciphertext", "")).startswith("vault:v") for r in results]


def _ciphertexts(response: Any, expected: int) -> list[str]:
    results = response["data"]["batch_results"]
    if len(results) != expected or any("error" in r and r["error"] for r in results):
        raise DependencyDown("OpenBao answered an incomplete batch encryption", "openbao")
    return [str(r["ciphertext"]) for r in results]


class SealedBodyUnopenable(EtlError):
    """OpenBao is up but refuses this ciphertext, or its plaintext is no UTF-8 text: this letter, not the run.

    A garbage or planted `sealed_body`, or a letter sealed under a key version retired since
    (`min_decryption_version`). Anyone who may send to the DLQ can plant one: a sweep counts it
    and goes on.
    """


class DeadLetterKeyUnusable(Misconfigured):
    """OpenBao has no dead-letter key of that name, or will not let this token decrypt with it: the settings.

    Every letter would fail alike: a command stops, naming the setting (KEY_SETTING) and the key,
    rather than count genuine letters as could-not-be-opened (SealedBodyUnopenable).
    """


KEY_SETTING = "ETL_DLQ_SEAL_KEY"
"""The setting naming the dead-letter key, the ETL's and the DLQ operator's."""
PROBE_CIPHERTEXT = "vault:v1:" + base64.b64encode(bytes(32)).decode()
"""A ciphertext no key sealed: OpenBao refuses it under a usable key, and says why it cannot use another."""


def open_sealed(address: str, token: str, key_name: str, ciphertext: str, mount: str = "transit") -> str:
    """Decrypt a sealed dead-letter body as the operator whose token is given (OpenBao audits it).

    Raises DeadLetterKeyUnusable when OpenBao has no key `key_name` or the token may not decrypt
    with it, SealedBodyUnopenable when OpenBao refuses this ciphertext (HTTP 400) or it does not
    decode, DependencyDown when OpenBao is unreachable.
    """
    client = hvac.Client(url=address, token=token, timeout=5)
    try:
        response = client.secrets.transit.decrypt_data(name=key_name, ciphertext=ciphertext, mount_point=mount)
    except hvac.exceptions.Forbidden:
        raise DeadLetterKeyUnusable(
            f"OpenBao refused to decrypt with Transit key {key_name!r} ({KEY_SETTING}): either the setting is not"
            " the key the ETL seals with (the DLQ operator's policy allows that key only), or this token"
            " (VAULT_TOKEN, --token-file) is not the DLQ operator's (config/vault/tokenvault-dlq-operator.hcl)",
            "openbao",
        ) from None
    except hvac.exceptions.InvalidRequest as error:
        if any("key not found" in str(e) for e in error.errors or []):
            raise DeadLetterKeyUnusable(
                f"OpenBao at {address} has no Transit key {key_name!r} ({KEY_SETTING}): encryption key not found;"
                " set it to the key the ETL seals with, and ETL_DLQ_SEAL_VAULT_ADDR (or VAULT_ADDR) to the"
                " ETL's OpenBao",
                "openbao",
            ) from None
        raise SealedBodyUnopenable(
            f"OpenBao refused to decrypt this ciphertext with {key_name!r} (invalid, planted, or sealed under a"
            " retired key version): the body cannot be opened",
            "openbao",
        ) from None
    except (hvac.exceptions.VaultError, requests.RequestException) as error:
        raise DependencyDown(f"OpenBao unavailable: {type(error).__name__}", "openbao") from None
    try:
        return base64.b64decode(response["data"]["plaintext"], validate=True).decode("utf-8", "surrogatepass")
    except (KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise SealedBodyUnopenable("the decrypted body is not UTF-8 text: it cannot be opened", "openbao") from None


def check_dead_letter_key(address: str, token: str, key_name: str, mount: str = "transit") -> None:
    """Raise DeadLetterKeyUnusable unless OpenBao has `key_name` and this token may decrypt with it.

    Decrypts PROBE_CIPHERTEXT, which no key sealed: nothing is opened (OpenBao audits the attempt).
    DependencyDown when OpenBao is unreachable.
    """
    with contextlib.suppress(SealedBodyUnopenable):  # the key is there and usable; only the probe was refused
        open_sealed(address, token, key_name, PROBE_CIPHERTEXT, mount)
