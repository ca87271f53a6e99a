"""The whole embedded stack as a person runs it: `devstack up`, `make run`'s demo, `devstack down`."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from botocore.exceptions import ClientError

from devstack.demo import etl_lease_seconds
from devstack.envfile import read_env_file
from devstack.events import OutgoingEvent, send_events
from devstack.isolation import SERVICE_USERS
from devstack.procs import alive
from devstack.sqs import identity_key, sqs_client
from devstack.stack import StackState
from tests.etl_log import started_line
from tests.leaky_events import leaked, leaky_events, raw_values
from tests.malformed_samples import body
from tests.metrics_scrape import quarantined_total, scrape, stack_scrape

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "examples" / "sample_data.json"
DOCUMENTED_KEYS = {
    "SQS_ENDPOINT_URL",
    "SQS_QUEUE_URL",
    "SQS_DLQ_URL",
    "PG_ADMIN_DSN",
    "PG_ETL_DSN",
    "PG_VAULT_DSN",
    "PG_ANALYST_DSN",
    "TOKENVAULT_GRPC_ADDRESS",
    "TLS_CA_CERT",
    "ANALYST_TLS_CERT",
    "ANALYST_TLS_KEY",
    "VAULT_ADDR",
}

pytestmark = pytest.mark.e2e


def run(
    *args: str, state_dir: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOKENVAULT_STACK_DIR": str(state_dir), "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def stack_dir() -> Iterator[Path]:
    state_dir = Path(tempfile.mkdtemp(prefix="tokenvault-e2e-"))
    state_dir.chmod(0o755)
    started = run("-m", "devstack", "up", state_dir=state_dir)
    assert started.returncode == 0, started.stderr
    yield state_dir
    run("-m", "devstack", "down", state_dir=state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)  # `down` empties the directory; remove it too


def test_env_file_says_where_everything_listens(stack_dir: Path) -> None:
    env = read_env_file(stack_dir / "stack.env")
    assert env.keys() >= DOCUMENTED_KEYS
    assert (stack_dir / "stack.env").stat().st_mode & 0o077 == 0  # credentials: owner only
    assert Path(env["ANALYST_TLS_CERT"]).exists() and Path(env["ANALYST_TLS_KEY"]).exists()


def test_sqs_refuses_the_dev_key_and_each_service_holds_its_own_key_only(stack_dir: Path) -> None:
    env = read_env_file(stack_dir / "stack.env")
    with pytest.raises(ClientError) as refused:
        sqs_client(env["SQS_ENDPOINT_URL"]).get_queue_attributes(QueueUrl=env["SQS_QUEUE_URL"])
    assert refused.value.response["Error"]["Code"] == "InvalidClientTokenId"
    environs = {name: process_env(pid) for name, pid in StackState.load(stack_dir / "state.json").pids.items()}
    root = environs["ministack"]["AWS_ACCESS_KEY_ID"]  # the set-up's root key: ministack's alone
    assert root not in (stack_dir / "stack.env").read_text()
    assert environs["etl_service"]["AWS_ACCESS_KEY_ID"] == identity_key(env, "etl").access_key_id
    root_secret = environs["ministack"]["AWS_SECRET_ACCESS_KEY"]
    keys = {who: identity_key(env, who) for who in ("etl", "producer", "dlq-operator")}
    secrets_of = {who: {key.access_key_id, key.secret_access_key} for who, key in keys.items()}
    every_sqs_secret = {root, root_secret}.union(*secrets_of.values())
    not_the_etls = every_sqs_secret - secrets_of["etl"]
    assert not not_the_etls & set(environs["etl_service"].values())
    for name in ("vault_service", "openbao"):  # no SQS key at all, the ETL's included (review 21, R21-8)
        assert not every_sqs_secret & set(environs[name].values()), name


def process_env(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def test_demo_with_the_exercise_sample_reports_99_loaded_1_quarantined(stack_dir: Path) -> None:
    first = run("-m", "devstack.demo", "--file", str(SAMPLE), state_dir=stack_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    # The stack was up (`devstack up`): it said "starting the embedded stack" and used it as it was (W46-11).
    assert f"the embedded stack in {stack_dir.resolve()}: already up, used as it is\n" in first.stdout, first.stdout
    assert "starting" not in first.stdout, first.stdout
    assert "rows in user_logins  : 99 of these events  (new this run: 99; the table holds 99)" in first.stdout
    assert "quarantined (DLQ)    : 1 of these events  (new this run: 1)" in first.stdout
    assert "missing_field" in first.stdout
    assert "Detokenize ip_" in first.stdout and "(plain)" in first.stdout
    # A row of other events in the table: the summary counts the events sent, and says what the table holds
    # (it said `rows in user_logins: 992` of a table holding 1091: walk44, W44-2).
    env = read_env_file(stack_dir / "stack.env")
    other = OutgoingEvent("e2e-other-run-1", body(user_id="e2e-other-run", ip="192.0.2.201", device_id="999-99-0002"))
    send_events(sqs_client(env["SQS_ENDPOINT_URL"], identity_key(env, "producer")), env["SQS_QUEUE_URL"], [other])
    deadline = time.monotonic() + 30
    while table_rows(env) < 100:
        assert time.monotonic() < deadline, "the ETL did not load the other event"
        time.sleep(0.2)
    # As right after `make install`: the virtual environment not on PATH, an 80-column terminal (or a pipe).
    shell = {"PATH": "/usr/local/bin:/usr/bin:/bin", "COLUMNS": "80"}
    replay = run("-m", "devstack.demo", "--file", str(SAMPLE), state_dir=stack_dir, env=shell)
    assert "rows in user_logins  : 99 of these events  (new this run: 0; the table holds 100)\n" in replay.stdout
    # The lines a person reads or copies stay whole (they broke mid-sentence at 80 columns: walk, 6 Dec) ...
    assert "e.g. missing required field(s): user_id, device_type, locale, app_version, ip, device_id\n" in replay.stdout
    assert any(
        line.startswith("  analyst (mTLS client cert CN=analyst) Detokenize ip_") and line.endswith("vault.audit_log")
        for line in replay.stdout.splitlines()
    ), replay.stdout
    # ... and the command it prints runs as printed: it named `tokenvault`, which that shell does not find.
    (printed,) = (line for line in replay.stdout.splitlines() if "the same with the command line: " in line)
    copied = subprocess.run(
        ["/bin/sh", "-c", printed.split("the same with the command line: ", 1)[1]],
        cwd=REPO,
        env={**os.environ, **shell},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert copied.returncode == 0 and "plain" in copied.stdout, copied.stdout + copied.stderr
    raw = json.loads(SAMPLE.read_text())
    with psycopg.connect(env["PG_ANALYST_DSN"]) as conn:
        table = conn.execute("SELECT * FROM user_logins WHERE user_id <> 'e2e-other-run'").fetchall()
    assert len(table) == 99
    cells = {str(c) for row in table for c in row}
    assert not cells & ({r.get("ip") for r in raw} | {r.get("device_id") for r in raw})


def table_rows(env: dict[str, str]) -> int:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute("SELECT count(*) FROM user_logins").fetchone()
    return int(row[0]) if row else 0


def test_etl_runs_as_a_service_a_message_sent_is_loaded(stack_dir: Path) -> None:
    env = read_env_file(stack_dir / "stack.env")
    body = {
        "user_id": "e2e-user",
        "app_version": "9.8.7",
        "device_type": "ios",
        "ip": "192.0.2.200",
        "locale": "en-US",
        "device_id": "999-99-0001",
    }
    sqs_client(env["SQS_ENDPOINT_URL"], identity_key(env, "producer")).send_message(
        QueueUrl=env["SQS_QUEUE_URL"], MessageBody=json.dumps(body)
    )
    deadline = time.monotonic() + 30
    row = None
    while row is None and time.monotonic() < deadline:
        with psycopg.connect(env["PG_ANALYST_DSN"]) as conn:
            row = conn.execute(
                "SELECT masked_ip, app_version, app_version_text FROM user_logins WHERE user_id = 'e2e-user'"
            ).fetchone()
        time.sleep(0.2)
    assert row is not None and str(row[0]).startswith("ip_") and row[1:] == (9_008_007, "9.8.7")


def test_the_etl_takes_back_every_300_s_as_in_production_unless_up_said_otherwise(stack_dir: Path) -> None:
    env = read_env_file(stack_dir / "stack.env")
    assert env["STACK_ETL_TAKE_BACK_SECONDS"] == "300"  # `devstack up` without --etl-take-back-seconds
    started = started_line(Path(env["ETL_SERVICE_LOG"]))
    assert started["mode"] == "run" and started["take_back_seconds"] == 300, started


def test_the_etl_leases_60_s_as_in_production_unless_up_said_otherwise(stack_dir: Path) -> None:
    env = read_env_file(stack_dir / "stack.env")
    assert env["STACK_ETL_VISIBILITY_TIMEOUT_SECONDS"] == "60"  # `devstack up` without --etl-visibility-timeout-seconds
    assert etl_lease_seconds(env) == 60  # what `make run` names when it waits for a stopped ETL's messages


def test_service_logs_quarantine_and_metrics_contain_no_raw_pii(stack_dir: Path) -> None:
    env = read_env_file(stack_dir / "stack.env")
    # Rejected events too: a rejection message is where an ip or device id would be quoted.
    leaky = leaky_events()
    send_events(sqs_client(env["SQS_ENDPOINT_URL"], identity_key(env, "producer")), env["SQS_QUEUE_URL"], leaky.events)
    deadline = time.monotonic() + 30
    quarantined: dict[str, str] = {}
    while len(quarantined) < len(leaky.events):
        assert time.monotonic() < deadline, f"quarantined {len(quarantined)} of {len(leaky.events)} malformed events"
        time.sleep(0.2)
        with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
            rows = conn.execute(
                "SELECT event_id, reason FROM etl_quarantine WHERE event_id = ANY(%s)", (list(leaky.reasons),)
            ).fetchall()
        quarantined = dict(rows)
    assert quarantined == leaky.reasons  # each rejected for the reason it was made for
    raw = leaky.raw | raw_values(json.dumps(r) for r in json.loads(SAMPLE.read_text()))
    logs = Path(env["ETL_SERVICE_LOG"]).read_text() + Path(env["VAULT_SERVICE_LOG"]).read_text()
    assert logs.strip()
    assert leaked(raw, logs) == [], "raw values in the services' logs"
    for line in logs.splitlines():
        json.loads(line)  # every service log line is JSON
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        details = [row[0] for row in conn.execute("SELECT detail FROM etl_quarantine")]
    assert len(details) >= len(leaky.events) and leaked(raw, *details) == [], "raw values in etl_quarantine.detail"
    deadline = time.monotonic() + 10  # the ETL counts a batch after it has settled it
    while True:
        metrics = [stack_scrape(env, env[url]) for url in ("VAULT_METRICS_URL", "ETL_METRICS_URL")]
        assert leaked(raw, *metrics) == [], "raw values in the services' metrics"
        if quarantined_total(metrics[1]) >= len(details):  # every rejection counted, the crafted ones too
            break
        assert time.monotonic() < deadline, "the ETL's metrics never counted the rejections"
        time.sleep(0.2)


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


def read_as(user: str, path: Path) -> subprocess.CompletedProcess[str]:
    """`user` reads the file `path` (or lists it, a directory): what a process of that user can do."""
    command = ["ls", "-A", str(path)] if path.is_dir() else ["cat", str(path)]
    return subprocess.run(["runuser", "-u", user, "--", *command], capture_output=True, text=True, check=False)


def secrets_by_owner(stack_dir: Path) -> dict[str, list[Path]]:
    """Each owner (a component of the stack, the operator `root`, or `postgres`) -> its private files.

    Keys, secret ids, tokens, state directories and the process environment (each service's
    DSNs and settings; OpenBao's holds the dev root token), as `make up` leaves them.
    """
    env = read_env_file(stack_dir / "stack.env")
    state = StackState.load(stack_dir / "state.json")
    certs, run = stack_dir / "certs", stack_dir / "run"
    environ = {name: Path(f"/proc/{pid}/environ") for name, pid in state.pids.items()}
    return {
        "openbao": [Path(env["VAULT_AUDIT_LOG"]), Path(env["VAULT_AUDIT_LOG"]).parent, environ["openbao"]],
        "ministack": [run / "ministack", environ["ministack"]],
        "vault_service": [
            certs / "tokenvault-vault-key.pem",
            certs / "metrics" / "vault-metrics-key.pem",
            Path(env["VAULT_APPROLE_SECRET_ID_FILE"]),
            stack_dir / "audit" / "checkpoints.jsonl",
            run / "vault_service",
            run / "vault-health",  # its health listener's socket: no other user connects
            environ["vault_service"],
        ],
        "etl_service": [
            Path(env["ETL_TLS_KEY"]),
            certs / "metrics" / "etl-metrics-key.pem",
            Path(env["DLQ_SEAL_SECRET_ID_FILE"]),
            run / "etl_service",
            environ["etl_service"],
        ],
        "lock_watchdog": [run / "lock_watchdog", environ["lock_watchdog"]],  # its environment holds its DSN
        "root": [
            Path(env["ANALYST_TLS_KEY"]),
            Path(env["FRAUD_INVESTIGATOR_TLS_KEY"]),
            Path(env["PRIVACY_OFFICER_TLS_KEY"]),
            Path(env["METRICS_SCRAPER_TLS_KEY"]),
            Path(env["VAULT_SECURITY_TOKEN_FILE"]),
            Path(env["VAULT_ROOT_TOKEN_FILE"]),
            Path(env["DLQ_OPERATOR_TOKEN_FILE"]),
            stack_dir / "stack.env",
            Path(env["VAULT_SERVICE_LOG"]),
            Path(env["ETL_SERVICE_LOG"]),
            Path(env["LOCK_WATCHDOG_LOG"]),
        ],
        "postgres": [Path(state.postgres["data_dir"])],
    }


def test_no_service_can_read_the_ca_key_or_another_identity_s_key(stack_dir: Path) -> None:
    # CI runs the tests as root (.ci/run); only a stack started by root gives each service a user
    # of its own, so anyone else could not perform the act this test is about: fail, never pass.
    assert os.geteuid() == 0, "run as root: the embedded stack isolates its services only when started by root"
    pids = StackState.load(stack_dir / "state.json").pids
    assert not list(stack_dir.rglob("ca-key.pem"))  # every certificate is issued at start; the CA key is not kept
    uids = {name: uid_of(pid) for name, pid in pids.items()}
    assert len(set(uids.values())) == len(uids) and 0 not in uids.values(), uids
    assert uids == {name: pwd.getpwnam(user).pw_uid for name, user in SERVICE_USERS.items()}
    owned = secrets_by_owner(stack_dir)
    assert set(SERVICE_USERS) <= set(owned)
    for component, user in SERVICE_USERS.items():
        for path in owned[component]:  # the control: a refusal below is the other user's, not a missing file
            attempt = read_as(user, path)
            assert attempt.returncode == 0, (user, path, attempt.stderr)
        others = [path for owner, paths in owned.items() if owner != component for path in paths]
        for path in others:
            assert path.exists(), path
            attempt = read_as(user, path)
            assert attempt.returncode != 0 and "Permission denied" in attempt.stderr, (user, path, len(attempt.stdout))


OTHER_USER_FETCH = """
import ssl, sys, urllib.request
unverified = ssl.create_default_context()
unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
for url in sys.argv[1:]:
    for attempt in sorted({url, url.replace("https:", "http:")}):
        try:
            context = unverified if "https:" in attempt else None
            body = urllib.request.urlopen(attempt, timeout=5, context=context).read()
        except Exception as error:
            print("refused", attempt, type(error).__name__)
        else:
            print("READ", attempt, len(body))
"""


def test_metrics_are_read_with_the_scraper_certificate_only(stack_dir: Path) -> None:
    """The new-token and cache-miss counters tell whether a value is in the vault: no other user reads them."""
    env = read_env_file(stack_dir / "stack.env")
    urls = (env["VAULT_METRICS_URL"], env["ETL_METRICS_URL"])
    python = next(p for p in ("/usr/bin/python3", "/usr/local/bin/python3", sys.executable) if Path(p).exists())
    as_other = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []  # not root: no certificate at least
    attempt = subprocess.run([*as_other, python, "-c", OTHER_USER_FETCH, *urls], capture_output=True, text=True)
    assert attempt.returncode == 0, attempt.stderr
    assert "READ" not in attempt.stdout and attempt.stdout.count("refused") >= 3, attempt.stdout
    ca, scraper_key = Path(env["METRICS_TLS_CA"]), Path(env["METRICS_SCRAPER_TLS_KEY"])
    insiders = [(Path(env[f"{who}_TLS_CERT"]), Path(env[f"{who}_TLS_KEY"])) for who in ("ETL", "ANALYST")]
    etl_metrics_cert = stack_dir / "certs" / "metrics" / "etl-metrics.pem"  # a server certificate the ETL holds
    insiders.append((etl_metrics_cert, etl_metrics_cert.with_name("etl-metrics-key.pem")))
    for cert, key in insiders:
        assert cert.exists() and key.exists()
        for url in urls:
            with pytest.raises(OSError) as refused:
                scrape(url, ca, cert, key)
            assert not isinstance(refused.value, FileNotFoundError)
    if os.geteuid() == 0:  # the scraper's key is the operator's (root's) alone
        for user in ("nobody", *SERVICE_USERS.values()):
            denied = read_as(user, scraper_key)
            assert denied.returncode != 0 and "Permission denied" in denied.stderr, user
    vault_metrics, etl_metrics = (stack_scrape(env, url) for url in urls)
    assert "tokenvault_tokenize_new_tokens_total" in vault_metrics
    assert "tokenvault_token_cache_lookups_total" in vault_metrics
    assert "etl_rows_loaded_total" in etl_metrics


def test_the_vault_answers_probes_on_its_health_socket_only(stack_dir: Path) -> None:
    """The stack's vault serves its certificate-less health listener on a socket in its own 0700 directory."""
    socket_path = stack_dir / "run" / "vault-health" / "health.sock"
    for service in ("", "tokenvault.liveness"):
        probed = run(
            "-m",
            "vault_service.entrypoints.health_probe",
            "--address",
            f"unix:{socket_path}",
            "--service",
            service,
            state_dir=stack_dir,
        )
        assert probed.returncode == 0, probed.stderr
    assert socket_path.parent.stat().st_mode & 0o777 == 0o700 and socket_path.stat().st_mode & 0o777 == 0o600


def test_status_shows_a_vault_that_reports_its_database_unhealthy_and_its_recovery(stack_dir: Path) -> None:
    """Walk 47, W47-2: the README says `make status` shows a vault whose database check found the owner's objects
    (NOT_SERVING), but it looked at PIDs only: every line `up`, exit 0. It asks the vault's health listener now:
    NOT_SERVING (database unhealthy), exit 3; once the object is dropped the running vault serves again by itself."""
    env = read_env_file(stack_dir / "stack.env")
    status = run("-m", "devstack", "status", state_dir=stack_dir)
    assert status.returncode == 0 and "vault_service health: SERVING" in status.stdout, status.stdout
    with psycopg.connect(env["PG_ADMIN_DSN"], autocommit=True) as owner:
        owner.execute("CREATE POLICY w47_status ON vault.tokens USING (true)")
        try:
            status = _status_until(stack_dir, lambda done: done.returncode == 3)
            assert "vault_service health: NOT_SERVING (database unhealthy)" in status.stdout, status.stdout
            assert "degraded: the vault service runs but does not serve" in status.stdout, status.stdout
        finally:
            owner.execute("DROP POLICY w47_status ON vault.tokens")
    status = _status_until(stack_dir, lambda done: done.returncode == 0)  # no restart: its next round
    assert "vault_service health: SERVING" in status.stdout and status.stdout.endswith("up\n"), status.stdout


def _status_until(
    stack_dir: Path, done: Callable[[subprocess.CompletedProcess[str]], bool], limit: float = 60
) -> subprocess.CompletedProcess[str]:
    """`devstack status` again until `done` holds of it (the vault checks its database every 15 s)."""
    deadline = time.monotonic() + limit
    while not done(status := run("-m", "devstack", "status", state_dir=stack_dir)):
        assert time.monotonic() < deadline, status.stdout
        time.sleep(1)
    return status


def test_down_stops_every_process_it_started(stack_dir: Path) -> None:
    pids = StackState.load(stack_dir / "state.json").pids
    assert set(pids) == {"openbao", "ministack", "vault_service", "lock_watchdog", "etl_service"}
    stopped = run("-m", "devstack", "down", state_dir=stack_dir)
    assert stopped.returncode == 0
    assert not any(alive(pid) for pid in pids.values())
    assert not (stack_dir / "stack.env").exists()
    left = sorted(p.name for p in stack_dir.iterdir()) if stack_dir.exists() else []
    assert left == [], left  # it left `audit/` (the deleted chain's exported checkpoints) behind
