"""An erasure is done only with its audit row stored, against a database owner who drops it.

Attack test of the second insider round (3 Dec, h-attack2 89949aa; kept in a file of its own
beside tests/integration/test_audit_anchoring_bypass.py's reveal findings). Threat model,
*Insider: the database owner*: every erasure leaves an audit row naming who erased what.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc

from tests.conftest import RunningVault, client_channel
from tests.integration.test_audit_tamper import _as_owner, _verify, anchored, own_database
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

__all__ = ["anchored", "own_database"]  # fixtures used here, defined beside the first round's tests


def _tokenize_one_ip(env: dict[str, str], vault: RunningVault) -> str:
    ip = f"192.0.2.{uuid.uuid4().int % 250 + 1}"
    channel = client_channel(env, vault.address, "etl-service")
    response = vault_pb2_grpc.TokenVaultStub(channel).Tokenize(
        vault_pb2.TokenizeRequest(items=[vault_pb2.TokenizeItem(type=vault_pb2.TOKEN_TYPE_IP, value=ip)]),
        timeout=10,
    )
    channel.close()
    return response.results[0].token


def test_an_erasure_whose_audit_row_the_database_dropped_is_not_done(
    own_database: dict[str, str], anchored: tuple[RunningVault, Path]
) -> None:
    # The same rule as finding 2 (DO INSTEAD NOTHING), against Erase: vault.erase_tokens writes
    # its audit row with a plain INSERT inside the function, whose result nobody checks (the fix
    # counted the rows of the service's own appends only). The privacy officer's erasure is
    # done with no row naming who erased what, and audit-verify reports the log intact.
    vault, exported = anchored
    token = _tokenize_one_ip(own_database, vault)
    vault.wait_for_checkpoint()
    with _as_owner(own_database) as conn:
        conn.execute("CREATE RULE audit_dropped AS ON INSERT TO vault.audit_log DO INSTEAD NOTHING")
    channel = client_channel(own_database, vault.address, "privacy-officer")
    try:
        response = vault_pb2_grpc.TokenVaultStub(channel).Erase(
            vault_pb2.EraseRequest(tokens=[token], purpose="GDPR-UNSEEN"), timeout=10
        )
        erased = sum(r.erased for r in response.results)
    except grpc.RpcError:
        erased = 0
    finally:
        channel.close()
    with _as_owner(own_database) as conn:
        conn.execute("DROP RULE audit_dropped ON vault.audit_log")
        recorded = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose = 'GDPR-UNSEEN'").fetchone()
        kept = conn.execute("SELECT sealed IS NOT NULL FROM vault.tokens WHERE token = %s", (token,)).fetchone()
    assert erased or kept == (True,), "the erasure was refused, yet the value is gone: it was not rolled back"
    report = _verify(vault, exported)
    assert erased == 0 or recorded == (1,) or report.finding is not None, (
        f"{erased} value(s) were erased with no audit row stored, and audit-verify reports the log intact"
        f" ({report.rows} rows, {report.checkpoints} checkpoints)"
    )
