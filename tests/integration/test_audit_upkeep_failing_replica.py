"""A replica whose audit upkeep rounds fail stops revealing; the other replica goes on (review 16, finding 1).

The database owner makes one replica's segment read fail (a view in place of vault.audit_log,
raising for that replica's database login only): its remembered rows were never checked, the
fleet-wide anchoring alert stayed quiet (the other replica exported checkpoints), and its
reveals went on. Guarantee (docs/threat-model.md, "Insider: the database owner"): the vault
fails closed - once a row it appended has waited TOKENVAULT_AUDIT_UNCHECKED_SECONDS for its
check, that replica's audit appends, so its reveals, are refused (UNAVAILABLE) until a round
checks them; the failing rounds and the refused appends are counted (alerts
AuditUpkeepFailing, AuditRowsUnchecked).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import grpc
import psycopg

from tests.conftest import running_vault, stack_identity
from tests.integration import audit_attacks as attack
from tests.integration.audit_attacks import Sabotage, own_database
from tokenvault_client import VaultClient, VaultClientError

__all__ = ["own_database"]

_SEGMENT_READ = "WITH page AS MATERIALIZED (SELECT id, at,%"
"""The start of the upkeep's segment read (audit_chain.py `segment`)."""
_BOUND = 5
"""TOKENVAULT_AUDIT_UNCHECKED_SECONDS here: five 1-second rounds (the floor)."""


@contextmanager
def _login_of_its_own(env: dict[str, str], login: str) -> Iterator[str]:
    """A DSN of the vault's database for a new login in tokenvault_vault: one replica's own database user."""
    password = uuid.uuid4().hex
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {login} LOGIN IN ROLE tokenvault_vault PASSWORD '{password}'")
    parts = urlsplit(env["PG_VAULT_DSN"])
    netloc = f"{login}:{quote(password)}@{parts.netloc.rsplit('@', 1)[1]}"
    try:
        yield urlunsplit(parts._replace(netloc=netloc))
    finally:
        with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (login,))
            conn.execute(f"DROP ROLE {login}")


def _segment_read_fails_for(login: str) -> Sabotage:
    """vault.audit_log replaced by a view of it that raises on the upkeep's segment read by `login` only."""
    return Sabotage(
        plant="ALTER TABLE vault.audit_log RENAME TO audit_log_real;"
        " CREATE FUNCTION vault.segment_read_allowed() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN"
        f"  IF session_user = '{login}' AND current_query() LIKE '{_SEGMENT_READ}' THEN"
        "   RAISE EXCEPTION 'could not read block 0 of relation base/1/2';"
        "  END IF; RETURN true; END $$;"
        " CREATE VIEW vault.audit_log AS SELECT * FROM vault.audit_log_real WHERE vault.segment_read_allowed();"
        " GRANT SELECT, INSERT ON vault.audit_log TO tokenvault_vault",
        remove="DROP VIEW vault.audit_log; DROP FUNCTION vault.segment_read_allowed();"
        " ALTER TABLE vault.audit_log_real RENAME TO audit_log",
    )


def test_a_replica_whose_upkeep_rounds_fail_refuses_reveals_within_the_bound_while_the_other_serves(
    own_database: dict[str, str], tmp_path: Path
) -> None:
    login = f"replica_a_{uuid.uuid4().hex[:8]}"
    settings = {"TOKENVAULT_AUDIT_CHECKPOINT_SECONDS": "1", "TOKENVAULT_AUDIT_UNCHECKED_SECONDS": str(_BOUND)}
    failed = attack.counted("tokenvault_audit_upkeep_failed_total")
    unchecked = attack.counted("tokenvault_audit_rows_unchecked_total")
    missing = attack.counted("tokenvault_audit_rows_missing_total")
    with ExitStack() as stack:
        dsn_a = stack.enter_context(_login_of_its_own(own_database, login))
        a = stack.enter_context(
            running_vault(
                own_database,
                TOKENVAULT_DATABASE_DSN=dsn_a,
                TOKENVAULT_AUDIT_CHECKPOINT_FILE=str(tmp_path / "a.jsonl"),
                **settings,
            )
        )
        b = stack.enter_context(
            running_vault(own_database, TOKENVAULT_AUDIT_CHECKPOINT_FILE=str(tmp_path / "b.jsonl"), **settings)
        )
        token = attack.tokenize_fresh_ip(own_database, b)
        assert attack.analyst_reveal(own_database, a, token, "INC-1") == grpc.StatusCode.OK
        with attack.planted(own_database, _segment_read_fails_for(login)):
            planted = time.monotonic()
            refused_after, n = None, 0
            while refused_after is None and time.monotonic() - planted < _BOUND + 6:
                n += 1
                code = attack.analyst_reveal(own_database, a, token, f"INC-a{n}")
                if code == grpc.StatusCode.UNAVAILABLE:
                    refused_after = time.monotonic() - planted
                else:
                    assert code == grpc.StatusCode.OK, code
                    assert attack.analyst_reveal(own_database, b, token, f"INC-b{n}") == grpc.StatusCode.OK
                    time.sleep(0.3)
            assert refused_after is not None, (
                f"replica A's upkeep rounds failed for {_BOUND + 6} s (bound {_BOUND} s) and its reveals went on"
            )
            assert refused_after <= _BOUND + 3, refused_after  # the bound, a round and the calls' own time
            with VaultClient.connect(a.address, stack_identity(own_database, "analyst"), deadline=10) as analyst:
                try:
                    analyst.detokenize([token], "INC-a-refused")
                    raise AssertionError("replica A revealed while its audit rows went unchecked")
                except VaultClientError as error:
                    assert "not checked this replica's audit rows" in error.details, error.details
                    assert "tell the security team" in error.details, error.details
            assert attack.analyst_reveal(own_database, b, token, "INC-b-after") == grpc.StatusCode.OK  # B goes on
            assert attack.counted("tokenvault_audit_upkeep_failed_total") - failed >= _BOUND
            assert attack.counted("tokenvault_audit_rows_unchecked_total") - unchecked >= 1
        deadline = time.monotonic() + 5  # the plant removed: A's next round checks its rows, reveals resume
        while attack.analyst_reveal(own_database, a, token, "INC-a-again") != grpc.StatusCode.OK:
            assert time.monotonic() < deadline, "replica A kept refusing after its upkeep rounds passed again"
            time.sleep(0.5)
        # A's rows were in the chain all along (the plant diverted none): checked once it read them, none missing.
        assert attack.counted("tokenvault_audit_rows_missing_total") == missing
