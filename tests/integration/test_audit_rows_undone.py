"""A reveal is served only once its audit row is in vault.audit_log, whatever the insert reports.

The append counts the ids its INSERT returns (one per event). An AFTER trigger that deletes the
row it fired for, or a rule that diverts the insert to another table and RETURNs that row, both
hand back one id per event while vault.audit_log keeps nothing. So the service also looks for
its rows in the log once the append is committed, and refuses the calls when they are not there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RunningVault, stack_identity
from tests.integration.test_audit_tamper import _as_owner, _verify, anchored, own_database
from tests.integration.test_vault_security import fresh_value
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import Revealed, TokenType, VaultClient, VaultClientError

__all__ = ["anchored", "own_database"]  # fixtures used here, defined beside the first round's tests

_UNDO_AUDIT_ROWS = {
    "after-trigger-deletes": (
        "ALTER TABLE vault.audit_log DISABLE TRIGGER audit_log_append_only;"
        " CREATE FUNCTION public.audit_undone() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS"
        " $$ BEGIN DELETE FROM vault.audit_log WHERE id = NEW.id; RETURN NULL; END $$;"
        " CREATE TRIGGER audit_undone AFTER INSERT ON vault.audit_log"
        " FOR EACH ROW EXECUTE FUNCTION public.audit_undone()",
        "DROP TRIGGER audit_undone ON vault.audit_log; DROP FUNCTION public.audit_undone();"
        " ALTER TABLE vault.audit_log ENABLE TRIGGER audit_log_append_only",
    ),
    "rule-returning": (
        "CREATE TABLE public.audit_elsewhere (LIKE vault.audit_log INCLUDING DEFAULTS);"
        " GRANT INSERT, SELECT ON public.audit_elsewhere TO PUBLIC;"
        " CREATE RULE audit_diverted AS ON INSERT TO vault.audit_log"
        " DO INSTEAD INSERT INTO public.audit_elsewhere SELECT NEW.* RETURNING audit_elsewhere.*",
        "DROP RULE audit_diverted ON vault.audit_log; DROP TABLE public.audit_elsewhere",
    ),
}


@pytest.mark.parametrize("undone_by", sorted(_UNDO_AUDIT_ROWS))
def test_a_reveal_whose_audit_row_the_database_undoes_after_returning_its_id_is_not_revealed(
    own_database: dict[str, str], anchored: tuple[RunningVault, Path], undone_by: str
) -> None:
    vault, exported = anchored
    with VaultClient.connect(vault.address, stack_identity(own_database, "etl-service")) as etl:
        (token,) = etl.tokenize([(TokenType.IP, fresh_value(vault_pb2.TOKEN_TYPE_IP))])
    assert isinstance(token, str)
    vault.wait_for_checkpoint()
    create, drop = _UNDO_AUDIT_ROWS[undone_by]
    with _as_owner(own_database) as conn:
        conn.execute(create)
    revealed = 0
    with VaultClient.connect(vault.address, stack_identity(own_database, "analyst"), deadline=10) as analyst:
        for n in range(3):
            try:
                outcomes = analyst.detokenize([token], f"UNSEEN-{n}")
            except VaultClientError:  # refused: what the guarantee asks for
                continue
            revealed += sum(1 for outcome in outcomes if isinstance(outcome, Revealed))
    with _as_owner(own_database) as conn:
        conn.execute(drop)
        recorded = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose LIKE 'UNSEEN-%'").fetchone()
    vault.wait_for_checkpoint()
    report = _verify(vault, exported)
    assert revealed == 0 or recorded == (revealed,) or report.finding is not None, (
        f"{revealed} value(s) were revealed with {recorded[0] if recorded else 0} audit row(s) stored,"
        f" and audit-verify reports the log intact ({report.rows} rows, {report.checkpoints} checkpoints)"
    )
