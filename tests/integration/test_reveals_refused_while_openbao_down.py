"""Reveals while OpenBao is gone longer than the audit rows may wait unanchored (chaos 50, V50-2).

Real PostgreSQL and an OpenBao of the test's own, killed (SIGKILL) after the vault started. The
vault keeps its keys in memory and tokenizes on, but its audit upkeep cannot have a checkpoint
signed (Transit), so the rows its reveals appended stay unanchored and, after
TOKENVAULT_AUDIT_UNCHECKED_SECONDS, every reveal is refused: fail closed, as designed. Before the
fix the refusal sent the analyst (and whoever reads the ticket) to the checkpoint file's volume
("full or read-only, or the checkpoint table held") and named no Vault at all; it names Vault now.
"""

from __future__ import annotations

import os
import signal
import time

from tests.integration.fresh_values import fresh_value
from tests.integration.short_audit_bound import UNCHECKED_SECONDS, vault_with_a_short_audit_bound
from tests.integration.test_vault_dependencies import PrivateVault, private
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import Revealed, TokenType, VaultClientError

__all__ = ["private"]  # the fixture used here: an OpenBao and a database of the test's own


def test_reveals_refused_while_openbao_cannot_sign_say_so_and_tokenization_goes_on(
    stack_env: dict[str, str], private: PrivateVault
) -> None:
    with vault_with_a_short_audit_bound(stack_env, private) as bound:
        os.kill(private.bao.pid, signal.SIGKILL)  # OpenBao gone
        refusal = ""
        deadline = time.monotonic() + UNCHECKED_SECONDS + 15
        for case in range(100, 200):
            try:
                (outcome,) = bound.analyst.detokenize([bound.token], f"CASE-{case}")
                assert isinstance(outcome, Revealed)
            except VaultClientError as error:
                refusal = str(error)
                break
            assert time.monotonic() < deadline, "reveals were never refused while nothing anchored their rows"
            time.sleep(0.5)
        assert refusal.startswith("UNAVAILABLE")
        assert "Vault (OpenBao) cannot sign a checkpoint" in refusal  # before the fix: the file's volume
        assert "volume" not in refusal
        (later,) = bound.etl.tokenize([(TokenType.IP, fresh_value(vault_pb2.TOKEN_TYPE_IP))])
        assert isinstance(later, str)  # tokenization goes on
