"""Review 32: which key operations are interrupted, on real Postgres and OpenBao (a database of its own).

F1: intents paired with outcomes by "the next row": overlapping runs of one ticket (or a killed run, then its
re-run) made a finished job interrupted for ever, closed again on every key operation. F2: a live job of code
that holds nothing (an older replica or admin image) was closed while it ran. F3: a re-run waited for ever behind
an exclusive holder of its lock. F4: a job whose hold was ended went on (rewrap: `started, failed: interrupted,
ok`); an outcome row written once the hold is gone did not say so.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import RunningVault, running_vault, vault_config
from tests.integration.own_database import database_of_its_own
from vault_service.adapters.postgres.key_job_liveness import JOB_LOCK_CLASS, PostgresJobLiveness, job_key
from vault_service.bootstrap import job_liveness
from vault_service.domain.errors import DatabaseUnavailable, StorageError
from vault_service.domain.token_types import TokenType
from vault_service.service.ports import INTENT_HELD, INTENT_UNHELD
from vault_service.service.rotation import HOLD_LOST_NOTE


@pytest.fixture(scope="module")
def own_env(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    checkpoints = tmp_path_factory.mktemp("liveness") / "checkpoints.jsonl"
    with database_of_its_own(stack_env, "liveness", migrated=True, checkpoint_file=checkpoints) as env:
        yield env


@pytest.fixture(scope="module")
def own_vault(own_env: dict[str, str]) -> Iterator[RunningVault]:
    with running_vault(own_env) as running:
        yield running


@pytest.fixture
def observer(own_env: dict[str, str]) -> Iterator[PostgresJobLiveness]:
    liveness = job_liveness(vault_config(own_env))
    yield liveness
    liveness.release()


def _rows(env: dict[str, str], client: str, reason: str) -> list[tuple[int, str]]:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(
            "SELECT id, outcome FROM vault.audit_log WHERE client = %s AND purpose = %s ORDER BY id", (client, reason)
        ).fetchall()
    return [(int(i), str(o)) for i, o in rows]


def _outcomes(env: dict[str, str], client: str, reason: str) -> list[str]:
    return [outcome for _, outcome in _rows(env, client, reason)]


def _listed(observer: PostgresJobLiveness, client: str) -> list[int]:
    return [job.intent_id for job in observer.interrupted() if job.client == client]


def _close(own_vault: RunningVault, observer: PostgresJobLiveness, times: int = 1) -> None:
    for _ in range(times):
        own_vault.wired.rotation("vault:closer", liveness=observer).close_interrupted()


def _killed() -> None:
    raise RuntimeError("the process dies here")  # after the intent row: its outcome row is never written


def test_overlapping_runs_of_one_ticket_that_both_ended_are_never_interrupted(
    own_env: dict[str, str], own_vault: RunningVault, observer: PostgresJobLiveness
) -> None:
    """F1: two replicas (or a retry through the load balancer) run one ticket at once: `s1, s2, ok, ok`."""
    config = vault_config(own_env)
    first, second = job_liveness(config), job_liveness(config)
    actor = "vault:overlap"

    def second_run_while_the_first_is_live() -> None:
        own_vault.wired.rotation(actor, liveness=second).rewrap("CHG-L-1")

    try:
        own_vault.wired.rotation(actor, second_run_while_the_first_is_live, first).rewrap("CHG-L-1")
    finally:
        first.release()
        second.release()
    outcomes = _outcomes(own_env, actor, "CHG-L-1")
    assert [o.split(":")[0] for o in outcomes] == [INTENT_HELD, INTENT_HELD, "ok", "ok"]
    assert _listed(observer, actor) == []  # was: the first intent, for ever
    _close(own_vault, observer, 3)
    assert _outcomes(own_env, actor, "CHG-L-1") == outcomes  # was: one `failed: interrupted` row per key operation


def test_a_killed_run_and_its_rerun_the_dead_intent_alone_is_closed_once(
    own_env: dict[str, str], own_vault: RunningVault, observer: PostgresJobLiveness
) -> None:
    """F1: `s1 (killed), s2, ok` under one ticket, then `s3, ok, s4 (killed)` under another: s1 and s4, once each.

    The re-run of CHG-L-2 starts while the killed run's session is still there (the ~40 s of keepalives after a
    node is lost): it cannot close s1 first, so the log holds `started, started, ok`.
    """
    config = vault_config(own_env)
    actor = "vault:killed-rerun"
    killed, rerun, later, killed_later = (job_liveness(config) for _ in range(4))
    try:
        with pytest.raises(RuntimeError):
            own_vault.wired.rotation(actor, _killed, killed).rewrap("CHG-L-2")
        own_vault.wired.rotation(actor, liveness=rerun).rewrap("CHG-L-2")
        killed.release()  # the lost node's session ends at last
        own_vault.wired.rotation(actor, liveness=later).rewrap("CHG-L-3")
        later.release()
        with pytest.raises(RuntimeError):
            own_vault.wired.rotation(actor, _killed, killed_later).rewrap("CHG-L-3")
    finally:
        for liveness in (killed, rerun, later, killed_later):
            liveness.release()
    assert [o.split(":")[0] for o in _outcomes(own_env, actor, "CHG-L-2")] == [INTENT_HELD, INTENT_HELD, "ok"]
    assert [o.split(":")[0] for o in _outcomes(own_env, actor, "CHG-L-3")] == [INTENT_HELD, "ok", INTENT_HELD]
    (s1, _), _, _ = _rows(own_env, actor, "CHG-L-2")
    _, _, (s4, _) = _rows(own_env, actor, "CHG-L-3")
    assert _listed(observer, actor) == [s1, s4]  # not s2; not s3 (counting alone lists s3: 1 outcome < 2 intents)
    _close(own_vault, observer, 4)  # every later key operation: each dead intent gets one row, once
    for reason, dead in (("CHG-L-2", s1), ("CHG-L-3", s4)):
        closing = [o for o in _outcomes(own_env, actor, reason) if o.startswith("failed: interrupted")]
        assert len(closing) == 1 and f"intent row {dead} " in closing[0], closing
        assert "Caller(" not in closing[0] and "noticed by 'vault:closer'" in closing[0]  # F11: the name, no repr
    assert _listed(observer, actor) == []


def test_two_observers_close_one_interrupted_intent_with_one_row(
    own_env: dict[str, str], own_vault: RunningVault, observer: PostgresJobLiveness
) -> None:
    """Closing is idempotent: a second observer (and every later one) finds it closed, never a second row."""
    config = vault_config(own_env)
    running, other = job_liveness(config), job_liveness(config)
    actor = "vault:closed-once"
    try:
        with pytest.raises(RuntimeError):
            own_vault.wired.rotation(actor, _killed, running).rewrap("CHG-L-4")
        running.release()
        (dead,) = [job for job in observer.interrupted() if job.client == actor]
        closer = own_vault.wired.rotation("vault:closer", liveness=other)
        assert closer.close_interrupted() >= 1
        with observer.claimed(dead) as still_open:  # looked at again under its lock: closed already
            assert not still_open
        _close(own_vault, observer, 2)
    finally:
        for liveness in (running, other):
            liveness.release()
    outcomes = _outcomes(own_env, actor, "CHG-L-4")
    assert outcomes[0] == INTENT_HELD and len(outcomes) == 2 and outcomes[1].startswith("failed: interrupted")


def test_a_live_job_of_code_that_holds_nothing_is_never_closed(
    own_env: dict[str, str], own_vault: RunningVault, observer: PostgresJobLiveness
) -> None:
    """F2: an older replica or admin image (no hold, intent `started`) runs while a new replica closes."""
    actor = "vault:old-replica"
    closed: list[int] = []

    def meanwhile_a_new_replica_runs_a_key_command() -> None:
        assert _listed(observer, actor) == []
        closed.append(own_vault.wired.rotation("vault:new", liveness=observer).close_interrupted())

    own_vault.wired.rotation(actor, meanwhile_a_new_replica_runs_a_key_command).rewrap("CHG-L-5")
    outcomes = _outcomes(own_env, actor, "CHG-L-5")
    assert outcomes[0] == INTENT_UNHELD and len(outcomes) == 2 and outcomes[1].startswith("ok: ")  # was: 3 rows
    assert closed == [0]


def test_a_rerun_behind_an_exclusive_holder_of_its_lock_is_refused_in_seconds_naming_it(
    own_env: dict[str, str], own_vault: RunningVault
) -> None:
    """F3: the serving role holds pg_advisory_xact_lock(1953196655, key): the re-run is refused, on the record."""
    actor, reason = "vault:blocked", "CHG-L-6"
    key = job_key("rewrap", actor, "", reason)
    liveness = job_liveness(vault_config(own_env))
    try:
        with psycopg.connect(own_env["PG_VAULT_DSN"]) as insider:  # the serving role, a session of its own
            insider.execute("SELECT pg_advisory_xact_lock(%s::int4, %s::int4)", (JOB_LOCK_CLASS, key))
            start = time.monotonic()
            with pytest.raises(DatabaseUnavailable) as refused:
                own_vault.wired.rotation(actor, liveness=liveness).rewrap(reason)
            waited = time.monotonic() - start
            insider.rollback()
    finally:
        liveness.release()
    assert 2 < waited < 10, waited  # was: waiting for ever (or until the lock watch ended the holder at 5 s or more)
    message = str(refused.value)
    assert f"class {JOB_LOCK_CLASS}, key {key}" in message and f"objid = {key & 0xFFFFFFFF}" in message
    assert _rows(own_env, actor, reason) == []  # no intent row
    refusals = _outcomes(own_env, actor, "")
    assert len(refusals) == 1 and refusals[0] == f"refused: {message}"  # on the record; pairs with no job


def test_a_rewrap_whose_hold_was_ended_stops_with_its_own_outcome(
    own_env: dict[str, str], own_vault: RunningVault, observer: PostgresJobLiveness
) -> None:
    """F4: its hold's session ended after the intent row and an observer closed it: no `ok` after `interrupted`."""
    running = job_liveness(vault_config(own_env))
    actor, reason = "vault:unchecked", "CHG-L-7"

    def hold_ended_then_noticed() -> None:
        _end_hold(own_env, job_key("rewrap", actor, "", reason))
        own_vault.wired.rotation("vault:observer", liveness=observer).close_interrupted()

    try:
        with pytest.raises(StorageError, match="hold on the database ended"):
            own_vault.wired.rotation(actor, hold_ended_then_noticed, running).rewrap(reason)
    finally:
        running.release()
    outcomes = _outcomes(own_env, actor, reason)
    assert outcomes[0] == INTENT_HELD and outcomes[1].startswith("failed: interrupted")
    assert len(outcomes) == 3 and outcomes[2].startswith("failed: the key job's hold") and "ok" not in outcomes[2][:3]


def test_an_outcome_written_after_the_hold_ended_says_so(
    own_env: dict[str, str], own_vault: RunningVault, observer: PostgresJobLiveness
) -> None:
    """F4: reindex's hold ended in compaction (after its last check): its `ok` row says an interrupted may precede."""
    own_vault.wired.vault.tokenize("etl-service", [(TokenType.IP, f"198.51.100.{n}") for n in range(1, 40)])
    own_vault.wired.rotation("vault:setup").rotate_fingerprint_key("CHG-L-8")
    running = job_liveness(vault_config(own_env))
    actor, reason = "vault:compacting", "CHG-L-9"
    ended: list[bool] = []

    def progress(phase: str, done: int) -> None:
        if phase == "compact" and not ended:
            ended.append(True)
            _end_hold(own_env, job_key("reindex", actor, "", reason))

    try:
        own_vault.wired.rotation(actor, liveness=running).reindex(reason, 10, progress)
    finally:
        running.release()
    outcomes = _outcomes(own_env, actor, reason)
    assert ended and outcomes[0] == INTENT_HELD and len(outcomes) == 2
    assert outcomes[1].startswith("ok: ") and outcomes[1].endswith(HOLD_LOST_NOTE)


def _end_hold(env: dict[str, str], key: int) -> None:
    """End the session holding `key`'s lock (pg_terminate_backend: a restart, a network cut, an insider)."""
    held = "FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s::bigint::oid"
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as admin:
        ended = admin.execute(f"SELECT pg_terminate_backend(pid) {held}", (JOB_LOCK_CLASS, key & 0xFFFFFFFF)).fetchall()
        assert ended and all(row[0] for row in ended)
        for _ in range(50):
            row = admin.execute(f"SELECT count(*) {held}", (JOB_LOCK_CLASS, key & 0xFFFFFFFF)).fetchone()
            if row and row[0] == 0:
                return
            time.sleep(0.1)
    raise AssertionError("the hold's session did not end")
