"""Attack 39, P2: `tokenvault erase --from-dead-letters` reported every NOT_FOUND as "already erased (or never
stored)", exit 0 - a minted token mistyped by one character (still token-shaped), or a planted string, passed as
done while the vault kept the person's value under the real token.

Now the vault's Erase tells the two NOT_FOUNDs apart (the erased token's row is kept, its value cleared): "its value
was erased before" vs "the vault never issued it" (tokenvault_common/erase_outcomes.py), and the CLI counts only the
first as done. The vault, OpenBao, PostgreSQL of the session stack; the officer runs the real `tokenvault` console
script (the tester's setup, h-attack39). Synthetic values only.
"""

from __future__ import annotations

import time
import uuid

import grpc
import pytest

from tests.conftest import RunningVault, vault_clients
from tests.integration.test_erasure_reaches_tokens_of_a_dead_lettered_load import officer_runs
from tokenvault_client import ItemError, Revealed, TokenType
from tokenvault_common.erase_outcomes import ERASED_BEFORE, NEVER_ISSUED


def _one_char_off(token: str) -> str:
    return token[:-1] + ("A" if token[-1] != "A" else "B")


@pytest.mark.timeout(120)
def test_a_token_the_vault_never_issued_fails_the_officers_run_and_one_erased_before_is_done(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    requester = f"p2-fix-{tag}"
    ip, device = f"198.19.{int(tag[:2], 16)}.{int(tag[2:4], 16)}", f"p2-fix-dev-{tag}"
    with vault_clients(stack_env, vault.address) as make:
        minted = make("etl-service").tokenize([(TokenType.IP, ip), (TokenType.DEVICE_ID, device)])
        ip_token, device_token = (str(t) for t in minted)
        typo = _one_char_off(device_token)
        # The first step erased the ip token (the usual case); the vault now tells it from a string it never issued.
        first = make("privacy-officer").erase([ip_token], "GDPR-A39-P2")
        assert first == [None], first
        again = make("privacy-officer").erase([ip_token, typo], "GDPR-A39-P2")
        found = grpc.StatusCode.NOT_FOUND
        assert again == [ItemError(found, ERASED_BEFORE), ItemError(found, NEVER_ISSUED)], again
        # The officer's line with one token mistyped: the erased-before one is done, the typo fails (exit 1).
        line = f"tokenvault erase {ip_token} {typo} --user-id USER_ID --purpose REFERENCE --from-dead-letters --yes"
        ran = officer_runs(stack_env, vault.address, line, user_id=requester)
        assert ran.returncode == 1, ran.stdout + ran.stderr
        assert ran.stdout.count("already erased (by an earlier erasure)") == 1, ran.stdout
        assert "vault never issued it" in ran.stdout, ran.stdout  # the table wraps the outcome
        assert "1 of 2 tokens were not erased: 1 NOT_FOUND" in ran.stderr, ran.stderr
        assert "never issued them" in ran.stderr and "compare it with the line" in ran.stderr, ran.stderr
        assert isinstance(make("fraud-investigator").detokenize([device_token], "INC-A39-P2")[0], Revealed)
        # The line as printed: done (exit 0), the device value gone.
        right = line.replace(typo, device_token)
        done = officer_runs(stack_env, vault.address, right, user_id=requester)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.count("already erased (by an earlier erasure)") == 1, done.stdout
        assert not isinstance(make("fraud-investigator").detokenize([device_token], "INC-A39-P2")[0], Revealed)
    print(f"\nA39-P2 fix: never issued -> exit 1, erased before -> done; {time.monotonic() - started:.1f} s")
