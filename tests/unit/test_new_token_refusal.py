"""A Tokenize call refused for want of new-token budget tells nothing of which or how many values are new.

Attack 23, F2: the refusal said how many values of the call were not stored ("N values in one
call exceed ...", a retry-after scaled by that count), so junk values plus guesses made an exact
counting membership oracle that minted nothing. Now the refusal depends only on the call's size
and the client's limit, and the values refused are counted where the sweep alert looks.
"""

from __future__ import annotations

import pytest

from tests.unit.fakes import FakeAuditLog, FakeKeyStore, FakeKeyWrapper, FakeTokenStore
from vault_service.domain.errors import RateLimited
from vault_service.domain.policy import parse_policy
from vault_service.domain.token_types import TokenType
from vault_service.service.keyring import KeyManager
from vault_service.service.metering import TokenizeMeter
from vault_service.service.token_cache import TokenCache
from vault_service.service.vault import TokenVault

BURST = 20
POLICY = parse_policy(
    {
        "clients": {
            "etl": {
                "tokenize": ["ip"],
                # a refill of one new token in 1000 s: the bucket stays as the test leaves it
                "limits": {"new_tokens_per_second": 0.001, "new_tokens_burst": BURST},
            }
        }
    }
)
KNOWN = [f"192.0.2.{n}" for n in range(BURST)]


def _drained_vault(meter: TokenizeMeter | None = None) -> tuple[TokenVault, FakeAuditLog]:
    """A vault that stores KNOWN, which took the etl client's whole new-token burst."""
    keys = KeyManager(FakeKeyStore(), FakeKeyWrapper())
    keys.start()
    audit = FakeAuditLog()
    vault = TokenVault(FakeTokenStore(), keys, POLICY, audit, TokenCache(1000), meter)
    vault.tokenize_columns("etl", [(TokenType.IP, KNOWN)])
    return vault, audit


def _refusal(vault: TokenVault, values: list[str]) -> RateLimited:
    with pytest.raises(RateLimited) as refused:
        vault.tokenize_columns("etl", [(TokenType.IP, values)])
    return refused.value


@pytest.mark.parametrize("size", [5, BURST + 1], ids=["within-the-burst", "over-the-burst"])
def test_the_refusal_is_the_same_whether_one_or_every_value_of_the_call_is_new(size: int) -> None:
    vault, _ = _drained_vault()
    one_new = _refusal(vault, [*KNOWN[: size - 1], "198.51.100.1"])
    all_new = _refusal(vault, [f"198.51.100.{n}" for n in range(10, 10 + size)])
    assert str(one_new) == str(all_new)
    assert one_new.retry_after == all_new.retry_after
    assert f"this call of {size} values" in str(one_new)  # what the caller sent, and its limit: nothing else
    assert one_new.retry_after == min(size, BURST) / 0.001  # the refill of the call (at most the burst) from empty
    assert ("split it" in str(one_new)) == (size > BURST)


def test_values_refused_new_tokens_are_counted_for_the_sweep_alert_and_audited_with_their_number() -> None:
    counted: list[tuple[str, int]] = []
    vault, audit = _drained_vault(TokenizeMeter(on_refused_new=lambda client, values: counted.append((client, values))))
    _refusal(vault, [*KNOWN[:3], "198.51.100.1", "198.51.100.2"])
    _refusal(vault, [f"198.51.100.{n}" for n in range(10, 10 + BURST + 1)])
    assert counted == [("etl", 2), ("etl", BURST + 1)]
    refusals = [(e.outcome, e.item_count) for e in audit.events if e.outcome.startswith("refused")]
    assert refusals == [("refused: RateLimited", 2), ("refused: RateLimited", BURST + 1)]  # the audit reader's count


def test_a_refused_call_s_values_are_not_metered_as_tokenized() -> None:
    # Attack 23, F3: three refused calls of 201 values left "ok: 603 values, 0 new tokens" in the interval's row.
    meter = TokenizeMeter()
    vault, _ = _drained_vault(meter)
    meter.flush()  # the drained burst's own call
    for _ in range(3):
        _refusal(vault, [f"198.51.100.{n}" for n in range(10, 10 + BURST + 1)])
    assert meter.flush() == []  # the refusals are audited each in its own row
    vault.tokenize_columns("etl", [(TokenType.IP, KNOWN[:3])])
    (event,) = meter.flush()
    assert "3 values" in event.outcome, event.outcome
