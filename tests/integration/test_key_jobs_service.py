"""The key jobs run by the vault service for the security team's certificate (tokenvault.v1.KeyJobs).

Real OpenBao and Postgres: the security team's certificate has the running vault re-encrypt
and re-index with the vault's own credentials (it holds no Vault login or database role), every
value still reveals, and the job's intent and outcome rows name that certificate (CN, serial,
SHA-256); the analyst's and the ETL's certificates are refused PERMISSION_DENIED with nothing
moved; a malformed call and a second job while one runs are refused on the record too (naming the
running one); ending the call or SIGTERM stops the job before its next batch - the first too - (its
outcome row says so) and a re-run resumes. One database and vault for the module: each test
rotates a key of its own first. A job is held before its first batch by locking vault.data_keys
(its key ring waits for it), so a test knows where the job is without racing it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import psycopg
import pytest

from devstack.procs import stop_pid
from tests.conftest import RunningVault, running_vault, stack_identity, vault_clients, vault_config
from tests.integration.audit_rows import client_certificate, ticket_rows
from tests.integration.conftest import start_vault_process
from tests.integration.own_database import database_of_its_own
from tokenvault_client import (
    InterruptedKeyJob,
    KeyJobProgress,
    PermissionDenied,
    Revealed,
    TokenType,
    VaultClient,
    VaultClientError,
)
from vault_service.bootstrap import job_liveness
from vault_service.service.ports import INTENT_HELD

SECURITY_TEAM = "security-team"
IP = TokenType.IP


@pytest.fixture(scope="module")
def own_env(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    checkpoints = tmp_path_factory.mktemp("key-jobs") / "checkpoints.jsonl"
    with database_of_its_own(stack_env, "keyjobs", migrated=True, checkpoint_file=checkpoints) as env:
        yield env


@pytest.fixture(scope="module")
def own_vault(own_env: dict[str, str]) -> Iterator[RunningVault]:
    with running_vault(own_env) as running:
        yield running


@pytest.fixture
def client_as(own_env: dict[str, str], own_vault: RunningVault) -> Iterator[Callable[[str], VaultClient]]:
    with vault_clients(own_env, own_vault.address) as make:
        yield make


def _values(first: int, count: int) -> list[str]:
    return [f"10.77.{n // 256 % 256}.{n % 256}" for n in range(first, first + count)]


def _tokenized(client: VaultClient, values: list[str]) -> list[str]:
    tokens = client.tokenize([(IP, v) for v in values])
    assert all(isinstance(t, str) for t in tokens)
    return [str(t) for t in tokens]


def _rows_under(env: dict[str, str], dek_id: int) -> int:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT count(*) FROM vault.tokens WHERE dek_id = %s", (dek_id,)).fetchone()
    return int(row[0]) if row else 0


def test_the_security_team_certificate_has_the_vault_reencrypt_and_every_value_still_reveals(
    own_env: dict[str, str], own_vault: RunningVault, client_as: Callable[[str], VaultClient]
) -> None:
    values = _values(0, 300)
    tokens = _tokenized(client_as("etl-service"), values)
    new_dek = own_vault.wired.rotation("vault:test-operator").rotate_encryption_key("CHG-7100")

    updates = list(client_as(SECURITY_TEAM).key_job("reencrypt", "CHG-7101", batch_size=100))

    moving = [u for u in updates if u.phase == "reencrypt" and not u.finished]
    assert [u.rows_done for u in moving] == [100, 200, 300]  # progress reached the client
    assert {u.rows_total for u in moving} == {300}
    assert updates[-1].finished and updates[-1].rows_moved == 300 and "re-encrypted 300" in updates[-1].outcome
    assert _rows_under(own_env, new_dek) == 300
    reveals = client_as("fraud-investigator").detokenize(tokens, "CASE-7102")
    assert [r.value if isinstance(r, Revealed) else None for r in reveals] == values
    serial, digest = client_certificate(own_env, SECURITY_TEAM)
    rows = ticket_rows(own_env, "reencrypt", "CHG-7101")
    assert [(c, s, d) for c, s, d, _ in rows] == [(SECURITY_TEAM, serial, digest)] * 2
    assert rows[0][3] == INTENT_HELD and rows[1][3].startswith("ok: 300 values moved")


@pytest.mark.parametrize("client", ["analyst", "etl-service"])
def test_other_certificates_are_refused_and_nothing_moves(
    own_env: dict[str, str], own_vault: RunningVault, client_as: Callable[[str], VaultClient], client: str
) -> None:
    _tokenized(client_as("etl-service"), _values(1000, 20))
    new_dek = own_vault.wired.rotation("vault:test-operator").rotate_encryption_key(f"CHG-72{len(client)}")

    for job in ("reencrypt", "reindex"):
        with pytest.raises(PermissionDenied) as refused:
            list(client_as(client).key_job(job, "CHG-7201"))
        assert f"client {client!r} may not run the key job {job}" in refused.value.details
        assert "security team's client certificate" in refused.value.details
    assert _rows_under(own_env, new_dek) == 0
    assert ticket_rows(own_env, "reencrypt", "CHG-7201") == []
    with psycopg.connect(own_env["PG_ADMIN_DSN"]) as conn:
        refusals = conn.execute(
            "SELECT count(*) FROM vault.audit_log WHERE client = %s AND action IN ('reencrypt', 'reindex')"
            " AND outcome = 'refused: PermissionDenied'",
            (client,),
        ).fetchone()
    assert refusals is not None and refusals[0] >= 1  # audited as every refusal (throttled per peer)


def test_a_bad_reason_or_batch_size_is_refused_before_anything_and_on_the_record(
    own_env: dict[str, str], own_vault: RunningVault, client_as: Callable[[str], VaultClient]
) -> None:
    team = client_as(SECURITY_TEAM)
    serial, _ = client_certificate(own_env, SECURITY_TEAM)
    before = _refusals(own_env, serial, "refused: InvalidRequest")
    for reason, size in (("CHG-7301", 100_001), ("CHG-7302", 1), ("user 10.0.0.1 asked", 1000)):
        with pytest.raises(VaultClientError) as refused:
            list(team.key_job("reencrypt", reason, batch_size=size))
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert size == 1000 or "from 100 to 100000" in refused.value.details  # not a transaction per value (F4)
    assert _refusals(own_env, serial, "refused: InvalidRequest") == before + 3  # as every refusal (attack 26, F1)


def test_one_job_at_a_time_and_a_job_whose_call_ends_moves_no_further_batch_then_resumes(
    own_env: dict[str, str], own_vault: RunningVault, client_as: Callable[[str], VaultClient]
) -> None:
    values = _values(2000, 400)
    tokens = _tokenized(client_as("etl-service"), values)
    new_dek = own_vault.wired.rotation("vault:test-operator").rotate_encryption_key("CHG-7400")
    serial, _ = client_certificate(own_env, SECURITY_TEAM)
    refused_before = _refusals(own_env, serial, "refused: KeyJobRunning")
    operator = client_as(SECURITY_TEAM)
    with ThreadPoolExecutor(1) as pool, _keys_locked(own_env):  # the lock ends first
        first = _started_and_held(own_env, pool, lambda: list(operator.key_job("reencrypt", "CHG-7401", 100)))
        second = _refused_while_running(client_as(SECURITY_TEAM), "reencrypt started by 'security-team'")
        operator.close()  # the operator's Ctrl-C: the call ends while the job waits before its first batch
        _refused_while_running(client_as(SECURITY_TEAM), "stopping: the call that started it ended")
    assert first.exception(timeout=30) is not None  # the call was ended
    assert "reencrypt started by 'security-team'" in second

    stopped = _wait_for_outcome(own_env, "CHG-7401")
    assert stopped.startswith("failed: the reencrypt job stopped after 0 row(s)"), stopped  # no batch (attack 26, F3)
    assert "the call that started it ended" in stopped
    assert _rows_under(own_env, new_dek) == 0
    assert _refusals(own_env, serial, "refused: KeyJobRunning") >= refused_before + 2  # on the record (F1)
    left = own_vault.wired.rotation("vault:test-operator").status().rows_to_reencrypt
    assert left >= 400  # with what earlier tests' rotations left under older keys

    resumed = _once_the_stopped_job_ended(lambda: list(client_as(SECURITY_TEAM).key_job("reencrypt", "CHG-7403", 500)))
    assert resumed[-1].finished and resumed[-1].rows_moved == left
    assert own_vault.wired.rotation("vault:test-operator").status().rows_to_reencrypt == 0
    reveals = client_as("fraud-investigator").detokenize(tokens, "CASE-7404")
    assert [r.value if isinstance(r, Revealed) else None for r in reveals] == values


def test_the_security_team_certificate_has_the_vault_reindex(
    own_env: dict[str, str], own_vault: RunningVault, client_as: Callable[[str], VaultClient]
) -> None:
    values = _values(3000, 120)
    etl = client_as("etl-service")
    tokens = _tokenized(etl, values)
    pending = own_vault.wired.rotation("vault:test-operator").rotate_fingerprint_key("CHG-7500")

    updates = list(client_as(SECURITY_TEAM).key_job("reindex", "CHG-7501", batch_size=100))

    assert updates[-1].finished and "the new fingerprint key is active" in updates[-1].outcome
    assert any(u.phase == "reindex" and not u.finished for u in updates)
    assert own_vault.wired.keys.refresh().generation.fingerprint_id == pending
    assert _tokenized(etl, values) == tokens  # the same values find their tokens under the new key
    serial, _ = client_certificate(own_env, SECURITY_TEAM)
    assert [(c, s) for c, s, _, _ in ticket_rows(own_env, "reindex", "CHG-7501")] == [(SECURITY_TEAM, serial)] * 2


def test_a_vault_stopped_by_sigterm_stops_its_job_after_a_batch_and_tells_the_caller(
    own_env: dict[str, str], own_vault: RunningVault, client_as: Callable[[str], VaultClient], tmp_path: Path
) -> None:
    _tokenized(client_as("etl-service"), _values(4000, 200))
    new_dek = own_vault.wired.rotation("vault:test-operator").rotate_encryption_key("CHG-7600")
    address, pid = start_vault_process(own_env, tmp_path / "vault.log")  # the service as run: python -m vault_service
    try:
        with (
            VaultClient.connect(address, stack_identity(own_env, SECURITY_TEAM)) as team,
            VaultClient.connect(address, stack_identity(own_env, SECURITY_TEAM)) as other,
        ):
            with ThreadPoolExecutor(1) as pool, _keys_locked(own_env):  # the lock ends first
                job = _started_and_held(own_env, pool, lambda: list(team.key_job("reencrypt", "CHG-7601", 100)))
                os.kill(pid, signal.SIGTERM)  # a rollout
                _refused_while_running(other, "stopping: the vault service is stopping (SIGTERM)")
            stopped = job.exception(timeout=30)
        assert isinstance(stopped, VaultClientError) and stopped.code == grpc.StatusCode.ABORTED
        assert "the vault service is stopping (SIGTERM)" in stopped.details
        assert "run it again: it resumes" in stopped.details
        outcome = _wait_for_outcome(own_env, "CHG-7601")
        assert outcome.startswith("failed: the reencrypt job stopped after 0 row(s)") and "(SIGTERM)" in outcome
        assert _rows_under(own_env, new_dek) == 0  # no batch after the stop (attack 26, F3)
    finally:
        stop_pid(pid)
    assert own_vault.wired.rotation("vault:test-operator").status().rows_to_reencrypt > 0  # left for a re-run


def _refusals(env: dict[str, str], serial: str, outcome: str) -> int:
    """How many key-job refusal rows `outcome` name the security team's certificate `serial`."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT count(*) FROM vault.audit_log WHERE client = %s AND client_serial = %s"
            " AND action IN ('reencrypt', 'reindex') AND outcome = %s",
            (SECURITY_TEAM, serial, outcome),
        ).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def _keys_locked(env: dict[str, str]) -> Iterator[None]:
    """vault.data_keys locked: a key job starting now waits (its key ring) before its intent row and any batch."""
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn, conn.transaction():
        conn.execute("LOCK TABLE vault.data_keys IN ACCESS EXCLUSIVE MODE")
        yield


def _started_and_held(env: dict[str, str], pool: ThreadPoolExecutor, call: Callable[[], object]) -> Future[object]:
    """`call` (a key job's) running in `pool`, once its job waits for the locked vault.data_keys."""
    started = pool.submit(call)
    deadline = time.monotonic() + 30
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as conn:
        while not conn.execute(
            "SELECT count(*) FROM pg_locks WHERE relation = 'vault.data_keys'::regclass AND NOT granted"
        ).fetchone()[0]:  # type: ignore[index]
            assert not started.done(), started.exception()
            assert time.monotonic() < deadline, "the key job never reached vault.data_keys"
            time.sleep(0.02)
    return started


def _refused_while_running(client: VaultClient, expected: str, seconds: float = 15) -> str:
    """A second job's FAILED_PRECONDITION details, once they say `expected` (what the vault knows of the first)."""
    deadline = time.monotonic() + seconds
    while True:
        with pytest.raises(VaultClientError) as refused:
            list(client.key_job("reindex", "CHG-7402"))
        assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION, refused.value.details
        if expected in refused.value.details:
            return refused.value.details
        assert time.monotonic() < deadline, refused.value.details
        time.sleep(0.05)


def _wait_for_outcome(env: dict[str, str], reason: str, seconds: float = 30) -> str:
    """The outcome row of the job started under `reason`, once written."""

    deadline = time.monotonic() + seconds
    while True:
        rows = ticket_rows(env, "reencrypt", reason)
        if len(rows) > 1:
            return rows[-1][3]
        assert time.monotonic() < deadline, f"no outcome row for {reason}: {rows}"
        time.sleep(0.05)


def _once_the_stopped_job_ended(run: Callable[[], list[KeyJobProgress]], seconds: float = 30) -> list[KeyJobProgress]:
    """`run()` once the vault no longer refuses it for the stopped job (its exit round follows its outcome row)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return run()
        except VaultClientError as error:
            assert error.code == grpc.StatusCode.FAILED_PRECONDITION and "stopping" in error.details, error
            assert time.monotonic() < deadline, error
            time.sleep(0.05)


def _outcomes(env: dict[str, str], reason: str) -> list[str]:
    return [outcome for _, _, _, outcome in ticket_rows(env, "reencrypt", reason)]


def _interrupted(team: VaultClient, reason: str, seconds: float = 15) -> InterruptedKeyJob:
    """The key job started under `reason` as `status` reports it interrupted, once it does."""
    deadline = time.monotonic() + seconds
    while True:
        status = team.key_commands().status()
        found = [job for job in status.interrupted if job.reason == reason]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"{reason} never shown interrupted: {status.interrupted}"
        time.sleep(0.1)


def test_a_job_whose_vault_was_sigkilled_is_shown_interrupted_and_its_next_run_appends_its_outcome(
    own_env: dict[str, str], own_vault: RunningVault, client_as: Callable[[str], VaultClient], tmp_path: Path
) -> None:
    """Attack 26, F5: a vault SIGKILLed mid-job (OOM, node loss) left its intent row `started` forever."""
    _tokenized(client_as("etl-service"), _values(8000, 2000))
    new_dek = own_vault.wired.rotation("vault:test-operator").rotate_encryption_key("CHG-7700")
    address, pid = start_vault_process(own_env, tmp_path / "vault.log")  # the service as run: python -m vault_service
    try:
        with VaultClient.connect(address, stack_identity(own_env, SECURITY_TEAM)) as team:
            updates = team.key_job("reencrypt", "CHG-7701", 100)
            first = next(updates)  # one batch moved: the job is mid-way
            assert first.phase == "reencrypt" and first.rows_done == 100 and not first.finished
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(VaultClientError):
                list(updates)
    finally:
        stop_pid(pid)
    moved = _rows_under(own_env, new_dek)
    assert 0 < moved < 2000 + 300  # killed half-way (the module's earlier values count too)
    assert _outcomes(own_env, "CHG-7701") == [INTENT_HELD]

    team = client_as(SECURITY_TEAM)
    job = _interrupted(team, "CHG-7701")
    serial, _ = client_certificate(own_env, SECURITY_TEAM)
    assert (job.job, job.started_by, job.client_serial) == ("reencrypt", SECURITY_TEAM, serial)
    assert job.started_at and job.intent_row > 0
    assert team.key_commands().status().rows_to_reencrypt > 0  # how far: the work left, resumed by the next run
    assert _outcomes(own_env, "CHG-7701") == [INTENT_HELD]  # status only reports

    done = list(team.key_job("reencrypt", "CHG-7701", 500))  # the next run: the orphan's outcome, then the job
    assert done[-1].finished
    outcomes = _outcomes(own_env, "CHG-7701")
    assert outcomes[0] == outcomes[2] == INTENT_HELD and outcomes[3].startswith("ok: ")
    assert outcomes[1].startswith("failed: interrupted, the process ended") and f"row {job.intent_row} " in outcomes[1]
    assert [(c, s) for c, s, _, _ in ticket_rows(own_env, "reencrypt", "CHG-7701")] == [(SECURITY_TEAM, serial)] * 4
    assert not [j for j in team.key_commands().status().interrupted if j.reason == "CHG-7701"]
    assert own_vault.wired.rotation("vault:test-operator").status().rows_to_reencrypt == 0


def test_a_live_job_is_never_shown_interrupted_and_one_whose_holder_is_gone_is_closed_once(
    own_env: dict[str, str], own_vault: RunningVault
) -> None:
    """The hold tells a live job from a dead one: held, never reported; released with no outcome, closed once."""
    config = vault_config(own_env)
    running, observer, second = job_liveness(config), job_liveness(config), job_liveness(config)
    seen_while_running: list[list[int]] = []

    def look() -> None:  # after the intent row, before the work: the job is live
        seen_while_running.append([j.intent_id for j in observer.interrupted()])
        raise RuntimeError("the process dies here")  # its outcome row is never written

    try:
        with pytest.raises(RuntimeError):
            own_vault.wired.rotation("vault:test-live", look, running).rewrap("CHG-7800")
        (intent,) = [r for r in _all_rows(own_env, "vault:test-live", "CHG-7800")]
        assert intent[1] == INTENT_HELD and intent[0] not in seen_while_running[0]
        running.release()  # the session ends, as when the process is killed
        # Its backend exits (and frees the hold) a moment after the client closes: under load, not at once (CI 19:11).
        deadline = time.monotonic() + 10
        while not [j for j in observer.interrupted() if j.client == "vault:test-live"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [j.intent_id for j in observer.interrupted() if j.client == "vault:test-live"] == [intent[0]]
        (dead,) = [j for j in observer.interrupted() if j.client == "vault:test-live"]
        with observer.claimed(dead) as first, second.claimed(dead) as other:
            assert first and not other  # one claim at a time: two vaults never both append its outcome
        closed = own_vault.wired.rotation("vault:test-closer", liveness=second).close_interrupted()
        assert closed >= 1
        assert own_vault.wired.rotation("vault:test-closer", liveness=observer).close_interrupted() == 0
        outcomes = [o for _, o in _all_rows(own_env, "vault:test-live", "CHG-7800")]
        assert outcomes[0] == INTENT_HELD and len(outcomes) == 2
        assert outcomes[1].startswith("failed: interrupted, the process ended") and "vault:test-closer" in outcomes[1]
    finally:
        for liveness in (running, observer, second):
            liveness.release()


def _all_rows(env: dict[str, str], client: str, reason: str) -> list[tuple[int, str]]:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        rows = conn.execute(
            "SELECT id, outcome FROM vault.audit_log WHERE client = %s AND purpose = %s ORDER BY id", (client, reason)
        ).fetchall()
    return [(int(i), str(o)) for i, o in rows]
