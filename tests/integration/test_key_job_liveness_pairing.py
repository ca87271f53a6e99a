"""Reviews 32 and 33: which key operations are interrupted, on real Postgres and OpenBao (a database of its own).

F1: intents paired with outcomes by "the next row": overlapping runs of one ticket (or a killed run, then its
re-run) made a finished job interrupted for ever, closed again on every key operation. F2: a live job of code
that holds nothing (an older replica or admin image) was closed while it ran. F3: a re-run waited for ever behind
an exclusive holder of its lock. F4: a job whose hold was ended went on (rewrap: `started, failed: interrupted,
ok`); an outcome row written once the hold is gone did not say so. Review 33, R33-5: rows the serving role
appends fooled the pairing by a stack (a planted intent row moved "interrupted" onto the real finished run; one
planted `ok` hid a dead run): outcome rows now name their intent row, and pair by that id.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import RunningVault, running_vault, stack_identity, vault_config
from tests.integration.own_database import database_of_its_own
from tokenvault_client import VaultClient
from vault_service.adapters.postgres.key_job_liveness import JOB_LOCK_CLASS, PostgresJobLiveness, job_key
from vault_service.bootstrap import job_liveness
from vault_service.domain.audit import first_broken_record
from vault_service.domain.errors import DatabaseUnavailable, StorageError
from vault_service.domain.token_types import TokenType
from vault_service.service.ports import HOLD_LOST_NOTE, INTENT_HELD, INTENT_HELD_UNNAMED, INTENT_UNHELD


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
            insider.execute("SELECT vault.try_claim_key_job(%s::int4)", (key,))  # held exclusively
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
    (intent, _), _ = _rows(own_env, actor, reason)
    assert outcomes[1].startswith("ok: ") and outcomes[1].endswith(f"{HOLD_LOST_NOTE} (intent row {intent})")


def _appended_as_the_serving_role(env: dict[str, str], client: str, outcome: str, reason: str) -> int:
    """A rewrap row INSERTed by an insider with the serving role's credentials: chained by the database as any."""
    with psycopg.connect(env["PG_VAULT_DSN"], autocommit=True) as insider:
        row = insider.execute(
            "INSERT INTO vault.audit_log (client, action, item_count, outcome, purpose)"
            " VALUES (%s, 'rewrap', 0, %s, %s) RETURNING id",
            (client, outcome, reason),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_an_intent_row_planted_during_a_run_is_listed_interrupted_not_the_run(
    own_env: dict[str, str], own_vault: RunningVault, observer: PostgresJobLiveness
) -> None:
    """R33-5, case A: `started [real], started [planted], ok [real]`: the planted row is open, the real run paired.

    Before, the real run's outcome paired with the latest intent (the planted one): the real run, finished `ok`,
    was listed interrupted and the next key operation appended `failed: interrupted` for it.
    """
    running = job_liveness(vault_config(own_env))
    actor, reason = "vault:planted-intent", "CHG-L-10"
    planted: list[int] = []

    def an_insider_appends_an_intent_row() -> None:
        planted.append(_appended_as_the_serving_role(own_env, actor, INTENT_HELD, reason))

    try:
        own_vault.wired.rotation(actor, an_insider_appends_an_intent_row, running).rewrap(reason)
    finally:
        running.release()
    (real, _), (fake, _), (_, ok) = _rows(own_env, actor, reason)
    assert [fake] == planted and ok.startswith("ok: ") and ok.endswith(f" (intent row {real})")
    assert _listed(observer, actor) == [fake]  # was: [real]
    _close(own_vault, observer, 2)
    closing = [o for o in _outcomes(own_env, actor, reason) if o.startswith("failed: interrupted")]
    assert len(closing) == 1 and f"intent row {fake} " in closing[0], closing  # was: the real run's
    assert _listed(observer, actor) == [] and observer.unpaired_outcomes() == []
    assert first_broken_record(own_vault.wired.audit.records()) is None  # the appended rows are chained as any


@pytest.mark.parametrize("names", ["no intent row", "another job's intent row"])
def test_an_outcome_row_planted_after_a_dead_run_does_not_hide_it(
    own_env: dict[str, str], own_vault: RunningVault, observer: PostgresJobLiveness, names: str
) -> None:
    """R33-5, case B: a dead run's intent row, then a planted `ok`: the dead run is still listed (was: never).

    A planted row naming no intent row pairs with no intent row of this code; one naming an intent row of another
    ticket pairs with nothing and is listed as unpaired (status: UNPAIRED OUTCOME).
    """
    config = vault_config(own_env)
    actor, reason, other = "vault:planted-ok", f"CHG-L-11-{len(names)}", f"CHG-L-12-{len(names)}"
    killed, finished = job_liveness(config), job_liveness(config)
    try:
        own_vault.wired.rotation(actor, liveness=finished).rewrap(other)
        with pytest.raises(RuntimeError):
            own_vault.wired.rotation(actor, _killed, killed).rewrap(reason)
    finally:
        killed.release()
        finished.release()
    ((dead, _),) = _rows(own_env, actor, reason)
    (elsewhere, _), _ = _rows(own_env, actor, other)
    named = "" if names == "no intent row" else f" (intent row {elsewhere})"
    planted = _appended_as_the_serving_role(own_env, actor, f"ok: 0 data keys rewrapped{named}", reason)
    assert _listed(observer, actor) == [dead]  # was: [] (the planted `ok` paired with it)
    unpaired = [row for row in observer.unpaired_outcomes() if row.client == actor]
    if named:
        assert [(row.outcome_id, row.intent_id, row.paired_by) for row in unpaired] == [(planted, elsewhere, 0)]
        assert f"names intent row {elsewhere}, which is no earlier intent row of that job" in unpaired[0].describe()
    else:
        assert unpaired == []
    _close(own_vault, observer)
    closing = [o for o in _outcomes(own_env, actor, reason) if o.startswith("failed: interrupted")]
    assert len(closing) == 1 and f"intent row {dead} " in closing[0], closing
    assert _listed(observer, actor) == []


def test_a_second_outcome_row_naming_a_paired_intent_is_shown_by_status_as_a_duplicate(
    own_env: dict[str, str], own_vault: RunningVault, observer: PostgresJobLiveness
) -> None:
    """An outcome row naming an intent row an earlier one paired with pairs nothing: listed, and served by status."""
    running = job_liveness(vault_config(own_env))
    actor, reason = "vault:duplicate", "CHG-L-13"
    try:
        own_vault.wired.rotation(actor, liveness=running).rewrap(reason)
    finally:
        running.release()
    (intent, _), (ok_row, ok) = _rows(own_env, actor, reason)
    duplicate = _appended_as_the_serving_role(own_env, actor, ok, reason)  # the same text, naming the same row
    (row,) = [row for row in observer.unpaired_outcomes() if row.client == actor]
    assert (row.outcome_id, row.intent_id, row.paired_by, row.purpose) == (duplicate, intent, ok_row, reason)
    assert _listed(observer, actor) == []
    with VaultClient.connect(own_vault.address, stack_identity(own_env, "security-team")) as team:
        served = [u for u in team.key_commands().status().unpaired_outcomes if u.written_as == actor]
    assert [(u.outcome_row, u.names_intent_row, u.paired_by_row, u.job, u.reason) for u in served] == [
        (duplicate, intent, ok_row, "rewrap", reason)
    ]
    assert f"which outcome row {ok_row} paired with already (a duplicate)" in served[0].describe()


def test_rows_of_the_previous_release_still_pair_by_the_stack_beside_named_ones(
    own_env: dict[str, str], own_vault: RunningVault, observer: PostgresJobLiveness
) -> None:
    """A rolling upgrade: `started (held)` rows and outcome rows naming none (the previous release) pair as before.

    `s1, s2, ok, ok` (overlapping): none open; `s1, s2, ok` (s1 killed, re-run): s1 open; and a run of this release
    between an older run's intent and its outcome takes nothing from the older run's pairing.
    """
    actor = "vault:previous-release"
    older = [(INTENT_HELD_UNNAMED, "CHG-L-16"), (INTENT_HELD_UNNAMED, "CHG-L-16"), ("ok: 1", "CHG-L-16")]
    older += [("ok: 1", "CHG-L-16"), (INTENT_HELD_UNNAMED, "CHG-L-17"), (INTENT_HELD_UNNAMED, "CHG-L-17")]
    older += [("ok: 1", "CHG-L-17"), (INTENT_HELD_UNNAMED, "CHG-L-18")]
    ids = [_appended_as_the_serving_role(own_env, actor, outcome, reason) for outcome, reason in older]
    running = job_liveness(vault_config(own_env))
    with psycopg.connect(own_env["PG_VAULT_DSN"]) as older_replica:  # its runs live: their locks held
        for reason in ("CHG-L-17", "CHG-L-18"):
            key = job_key("rewrap", actor, "", reason)
            older_replica.execute("SELECT vault.hold_key_job(%s::int4)", (key,))  # the same lock, shared
        try:
            own_vault.wired.rotation(actor, liveness=running).rewrap("CHG-L-18")  # this release, same ticket
        finally:
            running.release()
        _appended_as_the_serving_role(own_env, actor, "ok: 1", "CHG-L-18")  # the older run's own outcome
        older_replica.rollback()
    outcomes = _outcomes(own_env, actor, "CHG-L-18")
    assert outcomes[1] == INTENT_HELD and outcomes[2].startswith("ok: ") and "(intent row " in outcomes[2]
    assert _listed(observer, actor) == [ids[4]]  # CHG-L-17's first intent; CHG-L-18's older run is paired
    assert [row for row in observer.unpaired_outcomes() if row.client == actor] == []


def _counting_sessions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The backend pid of every session a PostgresJobLiveness opens from now on (each opened as before)."""
    opened: list[int] = []
    connect = PostgresJobLiveness._connect

    def counted(self: PostgresJobLiveness) -> psycopg.Connection:
        conn = connect(self)
        opened.append(conn.info.backend_pid)
        return conn

    monkeypatch.setattr(PostgresJobLiveness, "_connect", counted)
    return opened


def test_a_key_operation_looks_for_interrupted_ones_and_closes_them_on_its_holds_session(
    own_env: dict[str, str], own_vault: RunningVault, observer: PostgresJobLiveness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`interrupted()` and each claim opened a session each, then the hold one more: now one, the hold's."""
    config = vault_config(own_env)
    actor, reason = "vault:one-session", "CHG-L-14"
    killed = job_liveness(config)
    try:
        with pytest.raises(RuntimeError):
            own_vault.wired.rotation(actor, _killed, killed).rewrap(reason)
    finally:
        killed.release()
    ((dead, _),) = _rows(own_env, actor, reason)
    opened = _counting_sessions(monkeypatch)
    holders: list[int] = []

    def who_holds_the_job() -> None:
        held = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s::bigint::oid"
        with psycopg.connect(own_env["PG_ADMIN_DSN"]) as admin:
            key = job_key("rewrap", actor, "", reason) & 0xFFFFFFFF
            holders.extend(int(row[0]) for row in admin.execute(held, (JOB_LOCK_CLASS, key)).fetchall())

    running = job_liveness(config)
    try:
        own_vault.wired.rotation(actor, who_holds_the_job, running).rewrap(reason)
    finally:
        running.release()
    assert len(opened) == 1 and holders == opened, (opened, holders)  # was: 3 sessions, the hold on the third
    outcomes = _outcomes(own_env, actor, reason)
    assert outcomes[1].startswith(f"failed: interrupted, the process ended (intent row {dead} ")  # closed on it
    assert outcomes[3].startswith("ok: ") and len(outcomes) == 4
    assert _listed(observer, actor) == []


def test_a_hold_whose_look_up_session_was_ended_meanwhile_takes_a_new_one(
    own_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The look-ups' session ended before the hold (a restart, an insider): the hold is taken on a new session."""
    opened = _counting_sessions(monkeypatch)
    liveness = job_liveness(vault_config(own_env))
    try:
        liveness.interrupted()
        with psycopg.connect(own_env["PG_ADMIN_DSN"], autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (opened[0],)).fetchone() == (True,)
        time.sleep(0.2)
        liveness.hold("rewrap", "vault:look-up-ended", "", "CHG-L-15")
        liveness.check()  # held
    finally:
        liveness.release()
    assert len(opened) == 2


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
