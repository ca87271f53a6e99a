"""The audit presence check counts ids, not rows (third insider round, 3 Dec).

vault_service/adapters/postgres/audit.py: an append "is refused unless there is one per event
and, once committed, each of those rows is in vault.audit_log" - against a rule diverting the
insert elsewhere and returning that row. The check counts the ids the append returned that
have a row in the log. A diverting rule whose RETURNING hands back the id of a row that is
already in the log (here the oldest, under a signed checkpoint) passes it: the reveal is
served, no row for it is written anywhere in vault.audit_log, and audit-verify reports the log
intact. The sequence and head checks of migration 0015 see nothing either (no row is added).
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import RunningVault, stack_identity
from tests.integration.test_audit_tamper import _as_owner, _verify, anchored, own_database
from tests.integration.test_vault_security import fresh_value
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import Revealed, TokenType, VaultClient, VaultClientError

__all__ = ["anchored", "own_database"]  # fixtures used here, defined beside the first round's tests

_DIVERT_RETURNING_AN_OLD_ID = (
    "CREATE TABLE public.audit_elsewhere (LIKE vault.audit_log INCLUDING DEFAULTS);"
    " GRANT INSERT, SELECT ON public.audit_elsewhere TO PUBLIC;"
    " CREATE FUNCTION public.audit_old_id() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS"
    " $$ BEGIN NEW.id := (SELECT min(id) FROM vault.audit_log); RETURN NEW; END $$;"
    " CREATE TRIGGER audit_old_id BEFORE INSERT ON public.audit_elsewhere"
    " FOR EACH ROW EXECUTE FUNCTION public.audit_old_id();"
    " CREATE RULE audit_diverted AS ON INSERT TO vault.audit_log"
    " DO INSTEAD INSERT INTO public.audit_elsewhere SELECT NEW.* RETURNING audit_elsewhere.*"
)
_UNDO = (
    "DROP RULE audit_diverted ON vault.audit_log; DROP TABLE public.audit_elsewhere;"
    " DROP FUNCTION public.audit_old_id()"
)


def test_a_diverted_audit_row_returning_an_existing_id_does_not_let_a_reveal_through(
    own_database: dict[str, str], anchored: tuple[RunningVault, Path]
) -> None:
    vault, exported = anchored
    with VaultClient.connect(vault.address, stack_identity(own_database, "etl-service")) as etl:
        (token,) = etl.tokenize([(TokenType.IP, fresh_value(vault_pb2.TOKEN_TYPE_IP))])
    assert isinstance(token, str)
    vault.wait_for_checkpoint()
    with _as_owner(own_database) as conn:
        conn.execute(_DIVERT_RETURNING_AN_OLD_ID)
    revealed = 0
    with VaultClient.connect(vault.address, stack_identity(own_database, "analyst"), deadline=10) as analyst:
        for n in range(3):
            try:
                outcomes = analyst.detokenize([token], f"UNSEEN-{n}")
            except VaultClientError:  # refused: what the guarantee asks for
                continue
            revealed += sum(1 for outcome in outcomes if isinstance(outcome, Revealed))
    with _as_owner(own_database) as conn:
        conn.execute(_UNDO)
        recorded = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose LIKE 'UNSEEN-%'").fetchone()
    vault.wait_for_checkpoint()
    report = _verify(vault, exported)
    assert revealed == 0 or recorded == (revealed,) or report.finding is not None, (
        f"{revealed} value(s) were revealed with {recorded[0] if recorded else 0} audit row(s) stored,"
        f" and audit-verify reports the log intact ({report.rows} rows, {report.checkpoints} checkpoints)"
    )
