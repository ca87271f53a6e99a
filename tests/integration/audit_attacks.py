"""The database owner's attacks on the audit trail: the fixtures and the loop the attack tests share.

An attack test plants SQL as the database owner (a rule or trigger that drops, deletes or
diverts audit rows), makes calls through the real vault, removes the SQL again and checks what
a user would: how many values were revealed or erased, how many audit rows were stored for
them, and audit-verify's verdict with the exported checkpoints. `reveal_with_audit_undone` and
`erase_with_audit_undone` are that loop; each test names its SQL and states the guarantee.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from prometheus_client import REGISTRY
from rich.console import Console

from tests.conftest import RunningVault, running_vault, stack_identity, vault_config
from tests.integration.fresh_values import fresh_value
from tests.integration.own_database import database_of_its_own
from tokenvault_api.v1 import vault_pb2
from tokenvault_client import Revealed, TokenType, VaultClient, VaultClientError
from vault_service.adapters.transit import verify_signature
from vault_service.entrypoints import audit_report_cli
from vault_service.service.audit_verify import AuditReport, FullAuditReport, verify_audit

Anchored = tuple[RunningVault, Path]
"""A vault on a database of its own, and the file it exports its signed checkpoints to."""


@pytest.fixture
def own_database(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The stack's settings, pointed at a freshly migrated database of this test's own.

    Its checkpoints are exported to a file of its own too: in the session's file they would
    contradict the session database's log (audit-verify checks every exported checkpoint).
    """
    checkpoints = tmp_path_factory.mktemp("audit") / "checkpoints.jsonl"
    with database_of_its_own(stack_env, "audit", checkpoint_file=checkpoints, migrated=True) as env:
        yield env


@pytest.fixture
def anchored(own_database: dict[str, str], tmp_path: Path) -> Iterator[Anchored]:
    """A vault on its own database, checkpointing every second into an exported file."""
    exported = tmp_path / "checkpoints.jsonl"
    with running_vault(
        own_database, TOKENVAULT_AUDIT_CHECKPOINT_SECONDS="1", TOKENVAULT_AUDIT_CHECKPOINT_FILE=str(exported)
    ) as vault:
        yield vault, exported


def as_owner(env: dict[str, str]) -> psycopg.Connection:
    """A superuser session that bypasses every trigger, as a database owner bent on it would."""
    conn = psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True)
    conn.execute("SET session_replication_role = replica")
    return conn


def audit_verify(vault: RunningVault, exported: Path | None) -> AuditReport:
    """audit-verify's report on the vault's log, with the exported checkpoints in `exported` (if any)."""
    return verify_audit(vault.wired.audit, vault.wired.signer.public_keys(), verify_signature, exported)


def audit_verify_fully(vault: RunningVault, exported: Path | None) -> FullAuditReport:
    """audit-verify's full report (erasures and audit keys checked too): the only one who-saw answers from."""
    return vault.wired.verify_audit_fully(exported)


def run_audit_verify(env: dict[str, str], exported: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """`audit-verify --exported ...` as the security team runs it: exit code and what it printed."""
    printed = io.StringIO()
    monkeypatch.setattr(audit_report_cli, "console", Console(file=printed, width=400))
    code = audit_report_cli.audit_verify(vault_config(env, TOKENVAULT_AUDIT_CHECKPOINT_FILE=str(exported)), exported)
    return code, printed.getvalue()


SERVING_ROLE_ERASE = (  # /tmp/attack9/serving_role_erase_lie.sh, as tokenvault_vault
    "SELECT vault.erase_tokens(%s::text[], %s::bytea[], 1, 'privacy-officer', '1000', %s, %s, 'ip')"
)
"""vault.erase_tokens called by the serving role itself: (tokens, the keyed hashes its row names, cert, purpose)."""


def erase(env: dict[str, str], vault: RunningVault, tokens: list[str], purpose: str) -> list[object]:
    """The privacy officer's Erase call: one outcome per token (None: erased)."""
    with VaultClient.connect(vault.address, stack_identity(env, "privacy-officer"), deadline=10) as officer:
        return list(officer.erase(tokens, purpose))


def tokenize_fresh_ip(env: dict[str, str], vault: RunningVault) -> str:
    """A token for a new IP address, issued to the ETL's identity."""
    with VaultClient.connect(vault.address, stack_identity(env, "etl-service")) as etl:
        (token,) = etl.tokenize([(TokenType.IP, fresh_value(vault_pb2.TOKEN_TYPE_IP))])
    if not isinstance(token, str):
        raise AssertionError(f"the vault did not tokenize a fresh IP address: {token}")
    return token


def analyst_reveal(env: dict[str, str], vault: RunningVault, token: str, purpose: str) -> grpc.StatusCode:
    """One Detokenize of `token` by the analyst: OK when the value was revealed, else the refusal's status."""
    with VaultClient.connect(vault.address, stack_identity(env, "analyst"), deadline=10) as analyst:
        try:
            (outcome,) = analyst.detokenize([token], purpose)
        except VaultClientError as error:
            return error.code
    assert isinstance(outcome, Revealed), outcome
    return grpc.StatusCode.OK


def counted(metric: str) -> float:
    """The value of the process's Prometheus sample `metric` (0 before its first count)."""
    return REGISTRY.get_sample_value(metric) or 0.0


def count_revealed(env: dict[str, str], vault: RunningVault, token: str, purposes: list[str]) -> int:
    """How many values the analyst got back, one Detokenize call per purpose; a refused call reveals none."""
    revealed = 0
    with VaultClient.connect(vault.address, stack_identity(env, "analyst"), deadline=10) as analyst:
        for purpose in purposes:
            try:
                outcomes = analyst.detokenize([token], purpose)
            except VaultClientError:
                continue
            revealed += sum(1 for outcome in outcomes if isinstance(outcome, Revealed))
    return revealed


def count_erased(env: dict[str, str], vault: RunningVault, token: str, purpose: str) -> int:
    """How many values the privacy officer's Erase call destroyed; a refused call erases none."""
    with VaultClient.connect(vault.address, stack_identity(env, "privacy-officer"), deadline=10) as officer:
        try:
            return sum(1 for outcome in officer.erase([token], purpose) if outcome is None)
        except VaultClientError:
            return 0


@dataclass(frozen=True)
class Sabotage:
    """SQL the database owner runs against the audit tables (triggers bypassed), and the SQL that removes it."""

    plant: str
    remove: str


def diverted_elsewhere(returned_id: str | None = None) -> Sabotage:
    """A rule sending every INSERT into vault.audit_log to public.audit_elsewhere instead, RETURNING that row.

    With `returned_id` (an SQL expression over NEW), a trigger on audit_elsewhere first gives the
    diverted row that id: one the log already holds, so the INSERT hands back an existing row's id.
    """
    renumbered = (
        ""
        if returned_id is None
        else " CREATE FUNCTION public.audit_old_id() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS"
        f" $$ BEGIN NEW.id := {returned_id}; RETURN NEW; END $$;"
        " CREATE TRIGGER audit_old_id BEFORE INSERT ON public.audit_elsewhere"
        " FOR EACH ROW EXECUTE FUNCTION public.audit_old_id();"
    )
    return Sabotage(
        plant="CREATE TABLE public.audit_elsewhere (LIKE vault.audit_log INCLUDING DEFAULTS);"
        " GRANT INSERT, SELECT ON public.audit_elsewhere TO PUBLIC;"
        + renumbered
        + " CREATE RULE audit_diverted AS ON INSERT TO vault.audit_log"
        " DO INSTEAD INSERT INTO public.audit_elsewhere SELECT NEW.* RETURNING audit_elsewhere.*",
        remove="DROP RULE audit_diverted ON vault.audit_log; DROP TABLE public.audit_elsewhere"
        + ("" if returned_id is None else "; DROP FUNCTION public.audit_old_id()"),
    )


def anchored_token(env: dict[str, str], vault: RunningVault) -> str:
    """A token for a new IP address, once a signed checkpoint covers its audit row."""
    token = tokenize_fresh_ip(env, vault)
    vault.wait_for_checkpoint()
    return token


@contextmanager
def planted(env: dict[str, str], sabotage: Sabotage) -> Iterator[None]:
    """`sabotage` in place for the duration of the block, removed again afterwards."""
    with as_owner(env) as conn:
        conn.execute(sabotage.plant)
    try:
        yield
    finally:
        with as_owner(env) as conn:
            conn.execute(sabotage.remove)


@dataclass(frozen=True)
class UnderSabotage:
    """What calls made while their audit rows were being undone left behind."""

    verb: str
    """What the calls do to a value: revealed, erased."""
    done: int
    """Values the calls revealed or erased."""
    recorded: int
    """Audit rows for the calls in vault.audit_log once the sabotage was removed."""
    kept: bool
    """The value is still sealed in vault.tokens (for an erasure: it was not done, or was rolled back)."""
    report: AuditReport
    """audit-verify's report afterwards, with the exported checkpoints."""

    def unnoticed(self) -> str:
        """The failure message when values went and neither the log nor audit-verify shows it."""
        return (
            f"{self.done} value(s) were {self.verb} with {self.recorded} audit row(s) stored, and audit-verify"
            f" reports the log intact ({self.report.rows} rows, {self.report.checkpoints} checkpoints)"
        )


def reveal_with_audit_undone(env: dict[str, str], anchored: Anchored, sabotage: Sabotage) -> UnderSabotage:
    """Tokenize a fresh IP, let it be anchored, then reveal it three times (purposes UNSEEN-n) under `sabotage`."""
    purposes = [f"UNSEEN-{n}" for n in range(3)]
    return _under_sabotage(
        env, anchored, sabotage, "revealed", "UNSEEN-%", lambda token: count_revealed(env, anchored[0], token, purposes)
    )


def erase_with_audit_undone(env: dict[str, str], anchored: Anchored, sabotage: Sabotage) -> UnderSabotage:
    """Tokenize a fresh IP, let it be anchored, then erase it (purpose GDPR-UNSEEN) under `sabotage`."""
    return _under_sabotage(
        env,
        anchored,
        sabotage,
        "erased",
        "GDPR-UNSEEN",
        lambda token: count_erased(env, anchored[0], token, "GDPR-UNSEEN"),
    )


def _under_sabotage(
    env: dict[str, str], anchored: Anchored, sabotage: Sabotage, verb: str, purposes: str, calls: Callable[[str], int]
) -> UnderSabotage:
    """`calls(token)` on a fresh, anchored token with `sabotage` in place; its audit rows: purpose LIKE `purposes`."""
    vault, exported = anchored
    token = anchored_token(env, vault)
    with planted(env, sabotage):
        done = calls(token)
    with as_owner(env) as conn:
        recorded = conn.execute("SELECT count(*) FROM vault.audit_log WHERE purpose LIKE %s", (purposes,)).fetchone()
        sealed = conn.execute("SELECT sealed IS NOT NULL FROM vault.tokens WHERE token = %s", (token,)).fetchone()
    vault.wait_for_checkpoint()
    return UnderSabotage(verb, done, recorded[0] if recorded else 0, sealed == (True,), audit_verify(vault, exported))


HOLD_THE_SEGMENT_READ = """
CREATE TABLE public.held_round (on_ boolean);
INSERT INTO public.held_round VALUES (true);
GRANT SELECT ON public.held_round TO PUBLIC;
CREATE FUNCTION pg_catalog.unnest(bigint[]) RETURNS SETOF bigint LANGUAGE plpgsql AS $f$
BEGIN
  IF current_query() LIKE 'WITH page AS MATERIALIZED%' THEN
    WHILE EXISTS (SELECT 1 FROM public.held_round) LOOP
      BEGIN
        PERFORM pg_sleep(0.1);
      EXCEPTION WHEN query_canceled THEN NULL;  -- the statement timeout, or a cancel request: trapped
      END;
    END LOOP;
  END IF;
  RETURN QUERY SELECT $1[i] FROM generate_subscripts($1, 1) AS i;
END $f$;
CREATE OPERATOR public.@@@ (LEFTARG = integer, RIGHTARG = integer, FUNCTION = pg_catalog.int4pl);
"""
"""The database owner's hold on the audit upkeep's segment read (attack 17, finding 3): a function of his on the
statement's path that sleeps and catches `query_canceled`, so a statement timeout or a cancel is trapped. Attack 17
used a row-level security policy; since attack 46 the vault's serving sessions run with `row_security = off`, so a
policy fails the read at once instead: the hold is now an exact-match overload of the segment read's
`pg_catalog.unnest(bigint[])` (what the start-up and round catalog check refuses, but a round's statements do not
wait for that check). The operator's creation makes every session plan its statements again (a change to
pg_operator resets each plan cache), so one prepared before resolves to the overload too."""
RELEASE_THE_HOLD = "DELETE FROM public.held_round"
REMOVE_THE_HOLD = (
    "DROP OPERATOR public.@@@ (integer, integer); DROP FUNCTION pg_catalog.unnest(bigint[]);"
    " DROP TABLE public.held_round"
)


def held_segment_reads(owner: psycopg.Connection[Any]) -> set[int]:
    """The server processes running the upkeep's segment read now."""
    found = owner.execute(
        "SELECT pid FROM pg_stat_activity WHERE query LIKE 'WITH page AS MATERIALIZED%' AND state = 'active'"
    ).fetchall()
    return {int(pid) for (pid,) in found}


@contextmanager
def segment_read_held(owner: psycopg.Connection[Any]) -> Iterator[None]:
    """The owner's hold (HOLD_THE_SEGMENT_READ) in place for the block; then released, waited out and removed."""
    owner.execute(HOLD_THE_SEGMENT_READ)
    try:
        yield
    finally:
        owner.execute(RELEASE_THE_HOLD)
        until("the held statements gone", 10, lambda: not held_segment_reads(owner))
        owner.execute(REMOVE_THE_HOLD)


def until(what: str, seconds: float, probe: Callable[[], Any]) -> Any:
    """`probe()`'s first true answer, asked every 0.1 s; fails naming `what` if none comes within `seconds`."""
    deadline = time.monotonic() + seconds
    while not (found := probe()):
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.1)
    return found


REWRITE_AS_REFUSED = (
    "UPDATE vault.audit_log SET outcome = 'refused: RateLimited', purpose = '', revealed = NULL WHERE id = %(id)s",
    "UPDATE vault.audit_log SET row_hash = vault.audit_row_hash(prev_hash, id, at, client, client_serial,"
    " client_cert_sha256, action, purpose, token_types, item_count, outcome, revealed) WHERE id = %(id)s",
)
"""The owner's rewrite of a reveal's row (`id`) into a refused call of the same client naming no token,
re-hashed by the database's own function (same id, same count): attack 17, finding 2, and retest 17, finding A."""


PRESENCE_CHECK = "SELECT id, client, action, coalesce(purpose%"
"""The start of the append's presence check (audit.py `_PRESENT`): the only query shown the ghosts."""
CHAINED_GHOST_HASH = (
    "NEW.prev_hash := coalesce((SELECT r.row_hash FROM vault.audit_log_real r ORDER BY r.id DESC LIMIT 1),"
    " '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);"
    " NEW.row_hash := vault.audit_row_hash(NEW.prev_hash, NEW.id, NEW.at, NEW.client, NEW.client_serial,"
    " NEW.client_cert_sha256, NEW.action, NEW.purpose, NEW.token_types, NEW.item_count, NEW.outcome,"
    " NEW.revealed);"
)
"""Each ghost row with the hash the chain trigger would have given it, after the real head."""


def ghost_view(diverted: str, row_hash: str = CHAINED_GHOST_HASH) -> Sabotage:
    """Round 15's ghost view (report 15, finding 1): rows matching `diverted` (SQL over NEW) go to a side table.

    vault.audit_log becomes a view showing the side table's rows to the append's presence check
    only, and an INSTEAD OF trigger numbers each diverted row from the log's sequence and sets
    `row_hash` (SQL over NEW) before keeping it aside; other rows go to the real log.
    """
    return Sabotage(
        plant="ALTER TABLE vault.audit_log RENAME TO audit_log_real;"
        " CREATE TABLE vault.audit_ghosts (LIKE vault.audit_log_real);"
        " CREATE VIEW vault.audit_log AS SELECT * FROM vault.audit_log_real UNION ALL"
        f" SELECT * FROM vault.audit_ghosts WHERE current_query() LIKE '{PRESENCE_CHECK}';"
        " CREATE FUNCTION vault.ghost_insert() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"
        " SET search_path = pg_catalog AS $$ BEGIN"
        f"  IF {diverted} THEN"
        "   NEW.id := nextval('vault.audit_log_id_seq'::regclass); NEW.at := clock_timestamp();"
        f"   NEW.hash_version := 2; {row_hash}"
        "   INSERT INTO vault.audit_ghosts SELECT NEW.*; RETURN NEW;"
        "  END IF;"
        "  INSERT INTO vault.audit_log_real (client, client_serial, client_cert_sha256, action, purpose,"
        "   token_types, item_count, outcome, revealed) VALUES (NEW.client, NEW.client_serial,"
        "   NEW.client_cert_sha256, NEW.action, NEW.purpose, NEW.token_types, NEW.item_count, NEW.outcome,"
        "   NEW.revealed) RETURNING * INTO NEW;"
        "  RETURN NEW;"
        " END $$;"
        " CREATE TRIGGER ghost_insert INSTEAD OF INSERT ON vault.audit_log"
        " FOR EACH ROW EXECUTE FUNCTION vault.ghost_insert();"
        " GRANT SELECT, INSERT ON vault.audit_log TO tokenvault_vault;",
        remove="DROP VIEW vault.audit_log; DROP FUNCTION vault.ghost_insert();"
        " ALTER TABLE vault.audit_log_real RENAME TO audit_log; DROP TABLE vault.audit_ghosts;",
    )
