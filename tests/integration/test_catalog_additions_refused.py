"""Objects the database owner adds where the vault's SQL resolves names, and tables inheriting from a vault table,
are refused at start, make a running replica's database unhealthy, and are named by `audit verify` (attack 45).

A45-3: `pg_catalog.unnest(bytea[])` - an exact match PostgreSQL prefers to the built-in `unnest(anyarray)`
whatever the search path - emptied the erased-token set's read: a restarted replica started with an empty set;
`public.tokens_archive () INHERITS (vault.tokens)` holding the erased token's pre-erasure row fed it to the
vault's `FROM vault.tokens`: that replica handed the ERASED token out again, verify exit 0 "intact".
A45-4: `pg_catalog.format(text, text, "char")` hid a disabled trigger from the schema check.
Real OpenBao and PostgreSQL, a database of each test's own.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
from psycopg_pool import ConnectionPool

from tests.conftest import running_vault
from tests.integration.audit_attacks import as_owner, erase, own_database, run_audit_verify
from tests.integration.fresh_values import fresh_value
from tests.integration.test_erased_tokens_known import _tokenize
from tokenvault_api.v1 import vault_pb2
from vault_service.adapters.postgres.catalog_additions import PostgresCatalogAdditions
from vault_service.domain.errors import DatabaseUnavailable
from vault_service.service.maintenance import CatalogAltered, CatalogUnchecked, KeyMaintainer

__all__ = ["own_database"]

OVERLOAD = (  # attack 45's: yields the elements everywhere but in the erased-token set's read
    "CREATE FUNCTION pg_catalog.unnest(bytea[]) RETURNS SETOF bytea LANGUAGE sql IMMUTABLE"
    " SET search_path = pg_catalog AS $$ SELECT $1[i] FROM generate_subscripts($1, 1) AS i"
    " WHERE strpos(current_query(), 'octet_length(h)') = 0 $$"
)
BLIND_OID_COMPARISON = (  # what a check written `oid >= 16384` would resolve to: says no addition is one
    "CREATE FUNCTION pg_catalog.never(oid, integer) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT false $$;"
    " CREATE OPERATOR pg_catalog.>= (LEFTARG = oid, RIGHTARG = integer, FUNCTION = pg_catalog.never)"
)
REVOKED_CATALOG_READ = "REVOKE SELECT ON pg_catalog.pg_cast FROM PUBLIC"
"""Review 40, R40-2: the check's read of pg_cast fails; the check counted that as no addition (logged at DEBUG)."""
UNREAD = "cannot read the catalog to check it: permission denied for table pg_cast"
FORGED_FORMAT = (  # attack 45's: the schema check's trigger line printed every trigger 'enabled O'
    'CREATE FUNCTION pg_catalog.format(text, text, "char") RETURNS text LANGUAGE sql IMMUTABLE'
    " SET search_path = pg_catalog AS $$ SELECT CASE WHEN $1 = '%s enabled %s' THEN $2 || ' enabled O'"
    " ELSE format($1, VARIADIC ARRAY[$2, $3::text]) END $$"
)


def _erased_with_backup(env: dict[str, str]) -> tuple[str, str, list[str], tuple[object, ...]]:
    """(ip, token, columns, the token's row before its erasure - a base backup's bytes), the token then erased."""
    ip = fresh_value(vault_pb2.TOKEN_TYPE_IP)
    with running_vault(env) as first:
        token = _tokenize(env, first, ip)
        assert isinstance(token, str)
        with as_owner(env) as owner:
            cursor = owner.execute("SELECT * FROM vault.tokens WHERE token = %s", (token,))
            backup = cursor.fetchone()
            columns = [c.name for c in cursor.description or ()]
        assert backup is not None
        assert erase(env, first, [token], "GDPR-2026-4551") == [None]
    return ip, token, columns, tuple(backup)


def _shadow(env: dict[str, str], columns: list[str], backup: tuple[object, ...]) -> None:
    """A45-3's child table of vault.tokens outside schema vault, holding the erased token's pre-erasure row."""
    with as_owner(env) as owner:
        owner.execute("CREATE TABLE public.tokens_archive () INHERITS (vault.tokens)")
        owner.execute(
            f"INSERT INTO public.tokens_archive ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
            backup,
        )


def _verify(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    return run_audit_verify(env, Path(env["TOKENVAULT_AUDIT_CHECKPOINT_FILE"]), monkeypatch)


def test_a_pg_catalog_overload_stops_a_replica_from_starting_and_verify_names_it(
    own_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _erased_with_backup(own_database)
    with as_owner(own_database) as owner:
        owner.execute(OVERLOAD)
        owner.execute(BLIND_OID_COMPARISON)
    with pytest.raises(CatalogAltered) as refused, running_vault(own_database):
        pass  # before: it started with an empty erased-token set and reported healthy
    message = str(refused.value)
    assert "function pg_catalog.unnest(bytea[])" in message and "report it to the security team" in message
    # Walk 47, W47-3: it named `audit verify`, which the vault it stopped answers; now the command that runs without it.
    assert "run `python -m vault_service.admin audit-verify` with the service's settings" in message, message
    assert "operator pg_catalog.>=(oid,integer)" in message  # the check's own comparisons are not steered by it
    code, printed = _verify(own_database, monkeypatch)
    assert code == 1, printed  # before: exit 0 "audit log intact"
    assert "function pg_catalog.unnest(bytea[])" in printed and "audit log NOT verified" in printed


def test_a_table_inheriting_from_vault_tokens_stops_a_replica_from_starting_and_verify_names_it(
    own_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, columns, backup = _erased_with_backup(own_database)
    _shadow(own_database, columns, backup)
    refused = pytest.raises(CatalogAltered, match=r"public\.tokens_archive inherits from .* vault\.tokens")
    with refused, running_vault(own_database):
        pass  # before: it started and handed the erased token out from the child's row
    code, printed = _verify(own_database, monkeypatch)
    assert code == 1, printed
    assert "public.tokens_archive inherits from" in printed


def test_a_running_replica_reports_its_database_unhealthy_and_reads_only_the_vault_tables_rows(
    own_database: dict[str, str],
) -> None:
    ip, token, columns, backup = _erased_with_backup(own_database)
    with running_vault(own_database) as replica:
        replica.maintainer.check()
        assert replica.maintainer.healthy["database"]
        _shadow(own_database, columns, backup)
        # Before its next round: its queries read vault.tokens ONLY, so Tokenize's lookup does not find the child's
        # live copy of the erased row (before: the ERASED token's row, which only the erased-token set then refused).
        row = dict(zip(columns, backup, strict=True))
        fingerprint, token_type = row["fingerprint"], row["token_type"]
        assert isinstance(fingerprint, bytes) and isinstance(token_type, str)
        assert replica.wired.token_store.find_by_fingerprints(token_type, [fingerprint]) == {}
        assert _tokenize(own_database, replica, ip) != token
        replica.maintainer.check()
        assert not replica.maintainer.healthy["database"]  # before: healthy
        with as_owner(own_database) as owner:
            owner.execute("DROP TABLE public.tokens_archive")
            owner.execute(FORGED_FORMAT)
        replica.maintainer.check()
        assert not replica.maintainer.healthy["database"]  # a format() overload (A45-4) as well
        with as_owner(own_database) as owner:
            owner.execute('DROP FUNCTION pg_catalog.format(text, text, "char")')
        replica.maintainer.check()
        assert replica.maintainer.healthy["database"]  # healthy again once they are gone


def test_information_schema_recreated_by_hand_is_no_finding_but_pg_catalog_is(own_database: dict[str, str]) -> None:
    """information_schema is on no search path and some minor releases tell the DBA to re-create it (new oids):
    an object there must not stop the vault; the same object in pg_catalog is a finding (review of A45-3's fix)."""
    from vault_service.adapters.postgres.catalog_additions import read_catalog_additions

    with as_owner(own_database) as owner:
        owner.execute("CREATE VIEW information_schema.tv_recreated AS SELECT 1 AS one")
        owner.execute("CREATE FUNCTION information_schema.tv_probe() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$")
        assert read_catalog_additions(owner) == ()  # before: both named "... was added to pg_catalog or ..."
        owner.execute("CREATE FUNCTION pg_catalog.tv_probe() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$")
        (finding,) = read_catalog_additions(owner)
        assert finding.startswith("function pg_catalog.tv_probe() (oid ") and "was added to pg_catalog" in finding


def test_a_catalog_the_check_cannot_read_is_a_finding_at_start_each_round_and_in_verify(
    own_database: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """R40-2: attack 45's overload, then the check's catalog read revoked: before, the replica started and stayed
    healthy with the overload in place, and `audit verify` died with an InsufficientPrivilege traceback."""
    with running_vault(own_database) as replica:
        replica.maintainer.check()
        assert replica.maintainer.healthy["database"]
        with as_owner(own_database) as owner:
            owner.execute(OVERLOAD)
            owner.execute(REVOKED_CATALOG_READ)
        with caplog.at_level(logging.ERROR, logger="vault_service.service.maintenance"):
            replica.maintainer.check()
        assert not replica.maintainer.healthy["database"]  # before: healthy
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any(UNREAD in line and "report it to the security team" in line for line in errors), errors
    with pytest.raises(CatalogAltered) as refused, running_vault(own_database):
        pass  # before: it started, the overload in place
    message = str(refused.value)
    assert message.startswith(UNREAD) and "report it to the security team" in message, message
    code, printed = _verify(own_database, monkeypatch)  # before: psycopg.errors.InsufficientPrivilege raised
    assert code == 1, printed
    assert UNREAD in " ".join(printed.split()) and "audit log NOT verified" in printed, printed


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_database_down_is_an_outage_not_a_catalog_finding_and_no_start(own_database: dict[str, str]) -> None:
    """R40-2's other half: no connection is DatabaseUnavailable (not a tampering finding), and still no start."""
    down = ConnectionPool(f"host=127.0.0.1 port={_closed_port()} connect_timeout=1", min_size=1, timeout=0.5, open=True)
    try:
        with pytest.raises(DatabaseUnavailable):  # before: psycopg_pool.PoolTimeout, untranslated
            PostgresCatalogAdditions(down).catalog_additions()
        with running_vault(own_database) as replica:
            wired = replica.wired
            maintainer = KeyMaintainer(
                wired.keys, wired.token_store, wired.vault.cache, lambda *_: None, 60.0, wired.vault.erased,
                PostgresCatalogAdditions(down),
            )  # fmt: skip
            with pytest.raises(CatalogUnchecked) as refused:
                maintainer.start()  # before: started, its catalog unchecked
            assert not isinstance(refused.value, CatalogAltered)
            assert "cannot check the database's catalog before serving" in str(refused.value)
    finally:
        down.close()
