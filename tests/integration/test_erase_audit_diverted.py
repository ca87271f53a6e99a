"""An erasure is done only with its own audit row stored, against a diverting rule (3 Dec).

Attack test of the third insider round (h-attack3 04fb4de, finding 2; moved to a file of its
own beside tests/integration/test_audit_presence_check.py, which holds the service-append
sibling). Threat model, *Insider: the database owner*: vault.erase_tokens (migration 0016) read
its audit row back by the id its INSERT returned and checked only that a row with that id,
action 'erase' and the same client existed. A rule diverting the INSERT to another table, with
a trigger there setting the id to the officer's earlier, genuine erase row, passed that check:
the value was erased with no row recording it, and audit-verify reported the log intact.
Migration 0017 requires the returned id to be newer than every row before the INSERT and the
row read back to be the one written.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from tests.conftest import RunningVault, client_channel, stack_identity
from tests.integration.test_audit_tamper import _as_owner, _verify, anchored, own_database
from tests.integration.test_vault_security import fresh_value
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_client import TokenType, VaultClient

__all__ = ["anchored", "own_database"]  # fixtures used here, defined beside the first round's tests

# The INSERT into vault.audit_log goes to public.audit_elsewhere instead, and returns the id the
# trigger there gives it: the id of the client's newest erase row already in the log.
_DIVERT_TO_AN_EARLIER_ERASE_ROW = (
    "CREATE TABLE public.audit_elsewhere (LIKE vault.audit_log INCLUDING DEFAULTS);"
    " GRANT INSERT, SELECT ON public.audit_elsewhere TO PUBLIC;"
    " CREATE FUNCTION public.audit_old_id() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS"
    " $$ BEGIN NEW.id := (SELECT max(id) FROM vault.audit_log WHERE action = 'erase' AND client = NEW.client);"
    " RETURN NEW; END $$;"
    " CREATE TRIGGER audit_old_id BEFORE INSERT ON public.audit_elsewhere"
    " FOR EACH ROW EXECUTE FUNCTION public.audit_old_id();"
    " CREATE RULE audit_diverted AS ON INSERT TO vault.audit_log"
    " DO INSTEAD INSERT INTO public.audit_elsewhere SELECT NEW.* RETURNING audit_elsewhere.*"
)
_UNDO = (
    "DROP RULE audit_diverted ON vault.audit_log; DROP TABLE public.audit_elsewhere;"
    " DROP FUNCTION public.audit_old_id()"
)


def _erase(env: dict[str, str], vault: RunningVault, token: str, purpose: str) -> int:
    channel = client_channel(env, vault.address, "privacy-officer")
    try:
        response = vault_pb2_grpc.TokenVaultStub(channel).Erase(
            vault_pb2.EraseRequest(tokens=[token], purpose=purpose), timeout=10
        )
        return sum(r.erased for r in response.results)
    except grpc.RpcError:
        return 0
    finally:
        channel.close()


def test_an_erasure_whose_audit_row_is_diverted_to_an_earlier_erase_rows_id_is_not_done(
    own_database: dict[str, str], anchored: tuple[RunningVault, Path]
) -> None:
    vault, exported = anchored
    with VaultClient.connect(vault.address, stack_identity(own_database, "etl-service")) as etl:
        first, second = etl.tokenize(
            [(TokenType.IP, fresh_value(vault_pb2.TOKEN_TYPE_IP)), (TokenType.IP, fresh_value(vault_pb2.TOKEN_TYPE_IP))]
        )
    assert isinstance(first, str) and isinstance(second, str)
    assert _erase(own_database, vault, first, "GDPR-SEEN") == 1
    vault.wait_for_checkpoint()
    with _as_owner(own_database) as conn:
        conn.execute(_DIVERT_TO_AN_EARLIER_ERASE_ROW)
    erased = _erase(own_database, vault, second, "GDPR-UNSEEN")
    with _as_owner(own_database) as conn:
        conn.execute(_UNDO)
        recorded = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose = 'GDPR-UNSEEN'").fetchone()
        kept = conn.execute("SELECT sealed IS NOT NULL FROM vault.tokens WHERE token = %s", (second,)).fetchone()
    assert erased or kept == (True,), "the erasure was refused, yet the value is gone: it was not rolled back"
    vault.wait_for_checkpoint()
    report = _verify(vault, exported)
    assert erased == 0 or recorded == (1,) or report.finding is not None, (
        f"{erased} value(s) were erased with no audit row stored, and audit-verify reports the log intact"
        f" ({report.rows} rows, {report.checkpoints} checkpoints)"
    )
