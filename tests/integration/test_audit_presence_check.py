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

from tests.integration.audit_attacks import Anchored, Sabotage, anchored, own_database, reveal_with_audit_undone

__all__ = ["anchored", "own_database"]  # fixtures used here, shared by the audit attack tests

_DIVERT_RETURNING_AN_OLD_ID = Sabotage(
    plant="CREATE TABLE public.audit_elsewhere (LIKE vault.audit_log INCLUDING DEFAULTS);"
    " GRANT INSERT, SELECT ON public.audit_elsewhere TO PUBLIC;"
    " CREATE FUNCTION public.audit_old_id() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS"
    " $$ BEGIN NEW.id := (SELECT min(id) FROM vault.audit_log); RETURN NEW; END $$;"
    " CREATE TRIGGER audit_old_id BEFORE INSERT ON public.audit_elsewhere"
    " FOR EACH ROW EXECUTE FUNCTION public.audit_old_id();"
    " CREATE RULE audit_diverted AS ON INSERT TO vault.audit_log"
    " DO INSTEAD INSERT INTO public.audit_elsewhere SELECT NEW.* RETURNING audit_elsewhere.*",
    remove="DROP RULE audit_diverted ON vault.audit_log; DROP TABLE public.audit_elsewhere;"
    " DROP FUNCTION public.audit_old_id()",
)


def test_a_diverted_audit_row_returning_an_existing_id_does_not_let_a_reveal_through(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    seen = reveal_with_audit_undone(own_database, anchored, _DIVERT_RETURNING_AN_OLD_ID)
    assert seen.done == 0 or seen.recorded == seen.done or seen.report.finding is not None, seen.unnoticed()
