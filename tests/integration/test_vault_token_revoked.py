"""The vault service's OpenBao token revoked while it runs (chaos 50, V50-3).

Real PostgreSQL and an OpenBao of the test's own. The security team revokes the tokens the
service's AppRole logins made (`sys/leases/revoke-prefix/auth/approle/login`: an incident
response, or a restore of OpenBao from a snapshot older than the login). Every Transit call is
then refused 403. Before the fix the service kept its revoked token until its renewal was due (2/3
of its 1 h TTL: 40 min), so its checkpoints went unsigned and, after
TOKENVAULT_AUDIT_UNCHECKED_SECONDS, every reveal was refused for the rest of that time. Now a 403 has the
service look its token up, and a token OpenBao refuses is replaced by a new AppRole login (no renewal).
"""

from __future__ import annotations

import time

import hvac

from tests.integration.short_audit_bound import UNCHECKED_SECONDS, vault_with_a_short_audit_bound
from tests.integration.test_vault_dependencies import PrivateVault, private
from tokenvault_client import Revealed, VaultClientError

__all__ = ["private"]  # the fixture used here: an OpenBao and a database of the test's own


def test_a_revoked_token_is_replaced_and_reveals_go_on(stack_env: dict[str, str], private: PrivateVault) -> None:
    with vault_with_a_short_audit_bound(stack_env, private) as bound:
        root = hvac.Client(url=private.bao.address, token=private.bao.root_token)
        root.sys.revoke_prefix("auth/approle/login")  # every token of the service's logins, now
        refusals: list[str] = []
        end = time.monotonic() + UNCHECKED_SECONDS + 12
        case = 100
        while time.monotonic() < end:
            case += 1
            try:
                (outcome,) = bound.analyst.detokenize([bound.token], f"CASE-{case}")
                assert isinstance(outcome, Revealed)
            except VaultClientError as error:
                refusals.append(str(error))
            time.sleep(0.5)
        assert not refusals, f"{len(refusals)} reveals refused after the token's revocation: {refusals[-1]}"
        # the checkpoints are signed again: the rows revealed since are anchored
        bound.vault.wait_for_checkpoint()
