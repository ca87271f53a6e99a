"""Vault refusing a KEK version as too old is named as such, not as "Vault down" (attack 24, held).

With min_decryption_version raised before the data keys were rewrapped, Vault is up and refuses
the running vault's rewrap; its health said only "dependency unavailable" and the alert
"unreachable". The refusal's message now says what it is and what to do, and the maintainer's
warning carries the cause.
"""

from __future__ import annotations

import logging

import hvac.exceptions
import pytest

from tests.unit.fakes import FakeKeyStore, FakeKeyWrapper, FakeTokenStore
from vault_service.adapters.transit import _transit_data
from vault_service.domain.errors import KeysUnavailable
from vault_service.service.keyring import KeyManager
from vault_service.service.maintenance import VAULT, KeyMaintainer
from vault_service.service.token_cache import TokenCache

TOO_OLD = "ciphertext or signature version is disallowed by policy (too old), on post http://127.0.0.1:8200/v1/x"
"""Transit's answer (OpenBao 2.x) to a rewrap or decrypt under a version below min_decryption_version."""


def _refused() -> dict[str, object]:
    raise hvac.exceptions.InvalidRequest(TOO_OLD)


def test_a_too_old_refusal_says_vault_is_up_and_what_to_do() -> None:
    with pytest.raises(KeysUnavailable) as refused:
        _transit_data("rewrap a data key", _refused)
    message = str(refused.value)
    assert "disallowed by policy (too old)" in message and "Vault is up" in message
    assert "lower it again and run `tokenvault rewrap`" in message


class _Refusing(FakeKeyWrapper):
    def rewrap(self, wrapped_key: str) -> str:
        raise KeysUnavailable(f"Vault refused to rewrap a data key: InvalidRequest: {TOO_OLD}")


def test_the_maintainers_warning_names_the_cause_of_a_failed_vault_check(caplog: pytest.LogCaptureFixture) -> None:
    wrapper = _Refusing()
    keys = KeyManager(FakeKeyStore(), wrapper)
    keys.start()
    reports: list[tuple[str, bool]] = []
    maintainer = KeyMaintainer(keys, FakeTokenStore(), TokenCache(10), lambda d, ok: reports.append((d, ok)), 3600)
    wrapper.version = 2  # the KEK was rotated: the maintainer rewraps, and Vault refuses
    with caplog.at_level(logging.WARNING, logger="vault_service.service.maintenance"):
        maintainer.check()
    assert (VAULT, False) in reports
    (warning,) = [r for r in caplog.records if r.getMessage() == "dependency unavailable"]
    assert "too old" in warning.cause and warning.dependency == VAULT  # type: ignore[attr-defined]


def test_an_unreachable_vault_is_not_said_to_have_refused() -> None:
    """With OpenBao down, `tokenvault status` said "Vault refused to read the KEK's metadata: cannot reach Vault"."""
    import hvac

    from vault_service.adapters.transit import TransitKeyWrapper

    unreachable = TransitKeyWrapper(hvac.Client(url="http://127.0.0.1:1", timeout=2), "tokenvault")
    with pytest.raises(KeysUnavailable) as caught:
        unreachable.kek_versions()
    assert str(caught.value).startswith("could not read the KEK's metadata: cannot reach Vault ("), caught.value
    with pytest.raises(KeysUnavailable, match=r"^Vault refused to rewrap a data key: InvalidRequest"):
        _transit_data("rewrap a data key", _refused)
