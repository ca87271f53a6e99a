"""Bringing the whole embedded stack up and down.

`up()` starts OpenBao, SQS (ministack) and PostgreSQL on free loopback ports, configures them,
generates the mTLS certificates, starts vault_service and etl_service, and writes
`<state dir>/stack.env`. `down()` stops, by PID, only what `up()` started, and deletes the
state: the OpenBao dev server keeps the KEK in memory, so the data cannot outlive it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from devstack import certs
from devstack.envfile import read_env_file, write_env_file
from devstack.hugepages import release
from devstack.isolation import Isolation, isolation
from devstack.openbao import KEK_NAME, SECRET_ID_USES, configure_dead_letters, configure_transit, start_openbao
from devstack.postgres import pg_ctl, remove_cluster, start_postgres
from devstack.procs import StackError, alive, free_port, stop_pid
from devstack.services import start_etl_service, start_lock_watchdog, start_vault_service
from devstack.sqs import DEV_CREDENTIALS, SqsEndpoint, identity_env, identity_key, start_sqs
from devstack.trusted_stack import refuse_untrusted_stack_dir
from etl_service.config import DEFAULT_VISIBILITY_SECONDS, MAX_VISIBILITY_SECONDS, MIN_VISIBILITY_SECONDS
from etl_service.service.periodic_take_back import DEFAULT_TAKE_BACK_SECONDS

REPO = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPO / ".stack"
POLICY_FILE = REPO / "config" / "vault-policy.toml"
RESERVE_HUGE_PAGES = "TOKENVAULT_RESERVE_HUGE_PAGES"
"""`make up` with this set to 1 reserves huge pages for its Postgres (devstack/hugepages.py)."""
ETL_TAKE_BACK = "STACK_ETL_TAKE_BACK_SECONDS"
"""stack.env's key for the stack's ETL's ETL_TAKE_BACK_SECONDS (`devstack up --etl-take-back-seconds`).

Not ETL_TAKE_BACK_SECONDS itself, as STACK_ETL_METRICS_PORT: a second ETL started from a sourced
stack.env takes back as its own settings say. Kept in stack.env, so an ETL `make up` restarts runs
with the period the stack was started with.
"""
ETL_VISIBILITY = "STACK_ETL_VISIBILITY_TIMEOUT_SECONDS"
"""stack.env's key for the stack's ETL's ETL_VISIBILITY_TIMEOUT_SECONDS (`up --etl-visibility-timeout-seconds`): the
lease it takes on each message it receives, so how long one it received and never deleted stays invisible.

Kept as ETL_TAKE_BACK is (an ETL `make up` restarts runs with it), and read by `make run`, which says how long at
most it waits for the messages a stopped ETL had in hand (devstack.demo.etl_lease_seconds).
"""
MAX_TAKE_BACK_SECONDS = 86_400.0
"""The longest period the ETL accepts (etl_service/config.py)."""


def take_back_seconds(given: str | float) -> float:
    """A take-back period in seconds, 0 (never) to MAX_TAKE_BACK_SECONDS, as the ETL accepts it; ValueError else."""
    seconds = float(given)
    if not 0 <= seconds <= MAX_TAKE_BACK_SECONDS:  # NaN too
        raise ValueError(f"{given} is not a number of seconds from 0 to {MAX_TAKE_BACK_SECONDS:.0f}")
    return seconds


def visibility_seconds(given: str | int) -> int:
    """A lease in whole seconds, as the ETL's ETL_VISIBILITY_TIMEOUT_SECONDS takes it (2 to 43200); ValueError else."""
    refused = ValueError(
        f"{given} is not a whole number of seconds, {MIN_VISIBILITY_SECONDS} to {MAX_VISIBILITY_SECONDS}"
    )
    try:
        seconds = int(given)
    except ValueError:
        raise refused from None
    if not MIN_VISIBILITY_SECONDS <= seconds <= MAX_VISIBILITY_SECONDS:
        raise refused
    return seconds


def _seconds_text(seconds: float) -> str:
    return f"{seconds:.15g}"  # 300, not 300.0; every digit given kept


def state_dir_from_env() -> Path:
    """$TOKENVAULT_STACK_DIR, or `.stack/` in the repository."""
    return Path(os.environ.get("TOKENVAULT_STACK_DIR", DEFAULT_STATE_DIR)).resolve()


@dataclass
class StackState:
    """What `up()` started: PIDs by name and the Postgres cluster to stop."""

    pids: dict[str, int] = field(default_factory=dict)
    postgres: dict[str, str] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Write as JSON."""
        path.write_text(json.dumps({"pids": self.pids, "postgres": self.postgres}, indent=2))

    @classmethod
    def load(cls, path: Path) -> StackState:
        """Read what save() wrote."""
        raw = json.loads(path.read_text())
        return cls(raw["pids"], raw["postgres"])


def vault_service_env(env: dict[str, str]) -> dict[str, str]:
    """Environment of vault_service, from the stack's env file values."""
    certs_dir = Path(env["STACK_DIR"]) / "certs"
    return {
        "TOKENVAULT_GRPC_ADDRESS": env["TOKENVAULT_GRPC_ADDRESS"],
        "TOKENVAULT_DATABASE_DSN": env["PG_VAULT_DSN"],
        "TOKENVAULT_VAULT_ADDR": env["VAULT_ADDR"],
        "TOKENVAULT_VAULT_ROLE_ID": env["VAULT_APPROLE_ROLE_ID"],
        "TOKENVAULT_VAULT_SECRET_ID_FILE": env["VAULT_APPROLE_SECRET_ID_FILE"],
        "TOKENVAULT_KEK_NAME": KEK_NAME,
        "TOKENVAULT_TLS_CERT": str(certs_dir / "tokenvault-vault.pem"),
        "TOKENVAULT_TLS_KEY": str(certs_dir / "tokenvault-vault-key.pem"),
        "TOKENVAULT_TLS_CLIENT_CA": env["TLS_CA_CERT"],
        "TOKENVAULT_POLICY_FILE": str(POLICY_FILE),
        "TOKENVAULT_METRICS_PORT": env["STACK_VAULT_METRICS_PORT"],
        **_metrics_tls_env(env, "TOKENVAULT_METRICS", "vault-metrics"),
        "TOKENVAULT_AUDIT_CHECKPOINT_FILE": str(Path(env["STACK_DIR"]) / "audit" / "checkpoints.jsonl"),
    }


def embedded_vault_env(env: dict[str, str], iso: Isolation) -> dict[str, str]:
    """The embedded stack's own vault service: `vault_service_env` and its health listener on a Unix socket.

    The socket's directory is the service's alone (0700, its user's): only it and root reach the
    listener, as in compose and Kubernetes. Only this service serves one: the tests' and benches'
    vault processes, which share `vault_service_env`, may not serve one socket together.
    """
    run = Path(env["STACK_DIR"]) / "run"
    directory = run / "vault-health"
    directory.mkdir(parents=True, exist_ok=True)
    run.chmod(0o755)
    iso.give(directory, "vault_service", 0o700)
    return {**vault_service_env(env), "TOKENVAULT_HEALTH_ADDRESS": vault_health_address(Path(env["STACK_DIR"]))}


def vault_health_address(stack_dir: Path) -> str:
    """The embedded stack's vault health listener (a Unix socket in the service's own directory)."""
    return f"unix:{stack_dir / 'run' / 'vault-health' / 'health.sock'}"


def etl_service_env(env: dict[str, str]) -> dict[str, str]:
    """Environment of etl_service, from the stack's env file values."""
    return {
        "ETL_QUEUE_URL": env["SQS_QUEUE_URL"],
        "ETL_DLQ_URL": env["SQS_DLQ_URL"],
        "ETL_SQS_ENDPOINT_URL": env["SQS_ENDPOINT_URL"],
        "ETL_DATABASE_DSN": env["PG_ETL_DSN"],
        "ETL_VAULT_ADDRESS": env["TOKENVAULT_GRPC_ADDRESS"],
        "ETL_VAULT_SERVER_NAME": "localhost",
        "ETL_TLS_CA": env["TLS_CA_CERT"],
        "ETL_TLS_CERT": env["ETL_TLS_CERT"],
        "ETL_TLS_KEY": env["ETL_TLS_KEY"],
        "ETL_METRICS_PORT": env["STACK_ETL_METRICS_PORT"],
        **_metrics_tls_env(env, "ETL_METRICS", "etl-metrics"),
        "ETL_MAX_BATCH_AGE_SECONDS": "0.5",
        # None kept (a stack started before it was, the tests' components): the ETL's own default.
        **({"ETL_TAKE_BACK_SECONDS": env[ETL_TAKE_BACK]} if ETL_TAKE_BACK in env else {}),
        **({"ETL_VISIBILITY_TIMEOUT_SECONDS": env[ETL_VISIBILITY]} if ETL_VISIBILITY in env else {}),
        **_region_env(),
        **identity_key(env, "etl").env(),  # its own SQS key only
        **_sealing_env(env),
    }


def lock_watchdog_env(env: dict[str, str]) -> dict[str, str]:
    """Environment of the operators' lock watchdog (its own login, IN ROLE tokenvault_watchdog)."""
    return {"TOKENVAULT_WATCHDOG_DSN": env["PG_WATCHDOG_DSN"]}


def _region_env() -> dict[str, str]:
    return {name: DEV_CREDENTIALS[name] for name in ("AWS_REGION", "AWS_DEFAULT_REGION")}


def sqs_env(sqs: SqsEndpoint) -> dict[str, str]:
    """The env file values of the SQS endpoint: where it listens and each identity's key.

    AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are the DLQ operators' (a sourced stack.env runs
    `dead-letters`); the producer's and the ETL's are under SQS_PRODUCER_* and SQS_ETL_*.
    """
    return {
        **_region_env(),
        **sqs.keys["dlq-operator"].env(),
        **identity_env(sqs.keys),
        "SQS_ENDPOINT_URL": sqs.endpoint_url,
        "SQS_QUEUE_URL": sqs.queue_url,
        "SQS_DLQ_URL": sqs.dlq_url,
    }


def _metrics_tls_env(env: dict[str, str], prefix: str, name: str) -> dict[str, str]:
    """A service's metrics over TLS, the scraper's certificate required (absent from stacks started before)."""
    if "METRICS_TLS_CA" not in env:
        return {}
    certs_dir = Path(env["STACK_DIR"]) / "certs" / "metrics"
    return {
        f"{prefix}_TLS_CERT": str(certs_dir / f"{name}.pem"),
        f"{prefix}_TLS_KEY": str(certs_dir / f"{name}-key.pem"),
        f"{prefix}_TLS_CLIENT_CA": env["METRICS_TLS_CA"],
    }


def _sealing_env(env: dict[str, str]) -> dict[str, str]:
    """The ETL's dead-letter sealing settings (absent from stacks started before sealing existed)."""
    if "DLQ_SEAL_ROLE_ID" not in env:
        return {}
    return {
        "ETL_DLQ_SEAL_VAULT_ADDR": env["VAULT_ADDR"],
        "ETL_DLQ_SEAL_ROLE_ID": env["DLQ_SEAL_ROLE_ID"],
        "ETL_DLQ_SEAL_SECRET_ID_FILE": env["DLQ_SEAL_SECRET_ID_FILE"],
    }


def start_components(
    state_dir: Path,
    state: StackState,
    secret_id_uses: int = SECRET_ID_USES,
    isolate: bool = False,
    huge_pages: bool = False,
    authenticate_sqs: bool = False,
) -> dict[str, str]:
    """OpenBao, SQS, Postgres and certificates; returns the env file values (no services yet).

    `isolate` (`make up`): the CA key is not kept, and as root each process gets its own OS
    user and only its own key (devstack/isolation.py). Otherwise (the tests' stack) the CA key
    stays in the root-only `ca/` directory, for tests that mint certificates.
    `huge_pages`: Postgres's shared memory in huge pages reserved for it (devstack/hugepages.py).
    `authenticate_sqs` (`make up`): ministack checks every key and each identity's policy
    (devstack/sqs.py); otherwise (the tests' stack, which makes queues of its own) it takes any key.
    """
    iso = isolation(isolate)
    logs, secrets_dir, certs_dir = state_dir / "logs", state_dir / "secrets", state_dir / "certs"
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    secrets_dir.chmod(0o711 if iso.users else 0o700)  # services reach their own file, list nothing
    audit_dir = state_dir / "audit"  # the vault's exported audit checkpoints (not secret; its own to write)
    audit_dir.mkdir(parents=True, exist_ok=True)
    iso.give(audit_dir, "vault_service", 0o755)
    (audit_dir / "checkpoints.jsonl").unlink(missing_ok=True)  # a new database starts a new chain
    bao = start_openbao(logs / "openbao.log", state_dir / "openbao", iso.user("openbao"))
    state.pids["openbao"] = bao.pid
    transit = configure_transit(bao, secrets_dir, secret_id_uses)
    iso.give(transit.secret_id_file, "vault_service", 0o400)
    dead_letters = configure_dead_letters(bao, secrets_dir)
    iso.give(dead_letters.secret_id_file, "etl_service", 0o400)
    sqs = start_sqs(
        logs / "ministack.log",
        user=iso.user("ministack"),
        home=iso.home(state_dir, "ministack"),
        authenticated=authenticate_sqs,
    )
    state.pids["ministack"] = sqs.pid
    pg = start_postgres(state_dir, huge_pages)
    state.postgres = {
        "data_dir": str(pg.data_dir),
        "bindir": str(pg.bindir),
        "run_as": pg.run_as or "",
        "port": str(pg.port),
        "huge_pages_reserved": str(pg.huge_pages_reserved),
    }
    _, server, clients = certs.create_stack_certificates(certs_dir, None if isolate else state_dir / "ca")
    iso.give(server.key, "vault_service", 0o400)
    iso.give(clients["etl-service"].key, "etl_service", 0o400)
    metrics = certs.create_metrics_certificates(certs_dir / "metrics")  # the scraper's key stays the operator's
    iso.give(metrics.vault.key, "vault_service", 0o400)
    iso.give(metrics.etl.key, "etl_service", 0o400)
    vault_metrics, etl_metrics = free_port(), free_port()
    return {
        "STACK_DIR": str(state_dir),
        **sqs_env(sqs),
        "VAULT_ADDR": bao.address,
        "BAO_ADDR": bao.address,
        "VAULT_ROOT_TOKEN_FILE": str(transit.root_token_file),
        "VAULT_AUDIT_LOG": str(bao.audit_log),
        "VAULT_SECURITY_TOKEN_FILE": str(transit.security_token_file),
        "VAULT_APPROLE_ROLE_ID": transit.role_id,
        "VAULT_APPROLE_SECRET_ID_FILE": str(transit.secret_id_file),
        "VAULT_KEK_NAME": KEK_NAME,
        "DLQ_SEAL_ROLE_ID": dead_letters.role_id,
        "DLQ_SEAL_SECRET_ID_FILE": str(dead_letters.secret_id_file),
        "DLQ_OPERATOR_TOKEN_FILE": str(dead_letters.operator_token_file),
        "LOGIN_ROW_KEYS_FILE": str(dead_letters.login_row_keys_file),
        "PG_PORT": str(pg.port),
        "PG_ADMIN_DSN": pg.admin_dsn,
        "PG_VAULT_DSN": pg.vault_dsn,
        "PG_ETL_DSN": pg.etl_dsn,
        "PG_ANALYST_DSN": pg.analyst_dsn,
        "PG_WATCHDOG_DSN": pg.watchdog_dsn,
        "PG_PRIVACY_OFFICER_DSN": pg.privacy_officer_dsn,
        "TOKENVAULT_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
        "TLS_CA_CERT": str(certs_dir / "ca.pem"),
        "ANALYST_TLS_CERT": str(clients["analyst"].cert),
        "ANALYST_TLS_KEY": str(clients["analyst"].key),
        "ETL_TLS_CERT": str(clients["etl-service"].cert),
        "ETL_TLS_KEY": str(clients["etl-service"].key),
        "PRIVACY_OFFICER_TLS_CERT": str(clients["privacy-officer"].cert),
        "PRIVACY_OFFICER_TLS_KEY": str(clients["privacy-officer"].key),
        "FRAUD_INVESTIGATOR_TLS_CERT": str(clients["fraud-investigator"].cert),
        "FRAUD_INVESTIGATOR_TLS_KEY": str(clients["fraud-investigator"].key),
        "SECURITY_TEAM_TLS_CERT": str(clients["security-team"].cert),
        "SECURITY_TEAM_TLS_KEY": str(clients["security-team"].key),
        # Not ETL_METRICS_PORT: a second ETL started from a sourced stack.env would take it too.
        "STACK_VAULT_METRICS_PORT": str(vault_metrics),
        "STACK_ETL_METRICS_PORT": str(etl_metrics),
        "VAULT_METRICS_URL": f"https://127.0.0.1:{vault_metrics}/metrics",
        "ETL_METRICS_URL": f"https://127.0.0.1:{etl_metrics}/metrics",
        "METRICS_TLS_CA": str(metrics.ca),
        "METRICS_SCRAPER_TLS_CERT": str(metrics.scraper.cert),
        "METRICS_SCRAPER_TLS_KEY": str(metrics.scraper.key),
        "VAULT_SERVICE_LOG": str(logs / "vault_service.log"),
        "ETL_SERVICE_LOG": str(logs / "etl_service.log"),
        "LOCK_WATCHDOG_LOG": str(logs / "lock_watchdog.log"),
    }


def up(
    state_dir: Path,
    with_services: bool = True,
    etl_take_back_seconds: float = DEFAULT_TAKE_BACK_SECONDS,
    etl_visibility_seconds: int = DEFAULT_VISIBILITY_SECONDS,
) -> dict[str, str]:
    """Start everything, or restart what died of a stack that is there; StackError on failure.

    Only a fresh start that fails is stopped and cleared again; an existing stack is never
    deleted here (devstack/restart.py). `etl_take_back_seconds`: how often the ETL takes back
    what SQS's redrive moved to the DLQ (its ETL_TAKE_BACK_SECONDS; 0: never); `etl_visibility_seconds`:
    the lease it takes on each message it receives (its ETL_VISIBILITY_TIMEOUT_SECONDS). Both kept in
    stack.env; a stack that is there keeps what it was started with.
    """
    try:
        period = _seconds_text(take_back_seconds(etl_take_back_seconds))
    except ValueError as error:
        raise StackError(f"the ETL's take-back period: {error}") from None
    try:
        lease = str(visibility_seconds(etl_visibility_seconds))
    except ValueError as error:
        raise StackError(f"the ETL's visibility timeout: {error}") from None
    refuse_untrusted_stack_dir(state_dir)  # before anything starts (walk44, W44-4)
    env_file = state_dir / "stack.env"
    if (state_dir / "state.json").exists() and env_file.exists():
        from devstack.restart import restart_dead  # restart builds on this module

        restart_dead(state_dir)  # what died is restarted in place; only `down` deletes
        return read_env_file(env_file)
    if (state_dir / "state.json").exists():  # an `up` that failed half-way: clear what it left
        down(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    state = StackState()
    try:
        env = start_components(
            state_dir,
            state,
            isolate=True,
            huge_pages=os.environ.get(RESERVE_HUGE_PAGES) == "1",
            authenticate_sqs=True,
        )
        env[ETL_TAKE_BACK] = period
        env[ETL_VISIBILITY] = lease
        state.save(state_dir / "state.json")
        if with_services:
            iso = isolation(True)
            probe = (Path(env["TLS_CA_CERT"]), Path(env["ETL_TLS_CERT"]), Path(env["ETL_TLS_KEY"]))
            state.pids["vault_service"] = start_vault_service(
                embedded_vault_env(env, iso),
                Path(env["VAULT_SERVICE_LOG"]),
                probe,
                iso.user("vault_service"),
                iso.home(state_dir, "vault_service"),
            )
            state.save(state_dir / "state.json")
            state.pids["lock_watchdog"] = start_lock_watchdog(
                lock_watchdog_env(env),
                Path(env["LOCK_WATCHDOG_LOG"]),
                iso.user("lock_watchdog"),
                iso.home(state_dir, "lock_watchdog"),
            )
            state.save(state_dir / "state.json")
            state.pids["etl_service"] = start_etl_service(
                etl_service_env(env),
                Path(env["ETL_SERVICE_LOG"]),
                iso.user("etl_service"),
                iso.home(state_dir, "etl_service"),
            )
        state.save(state_dir / "state.json")
        write_env_file(env_file, env)
        return env
    except BaseException:
        state.save(state_dir / "state.json")
        down(state_dir, keep_logs=True)
        raise


def running(state_dir: Path) -> bool:
    """Whether every process recorded in the state file is alive."""
    try:
        state = StackState.load(state_dir / "state.json")
    except (FileNotFoundError, ValueError):
        return False
    return bool(state.pids) and all(alive(pid) for pid in state.pids.values())


def down(state_dir: Path, keep_logs: bool = False) -> list[str]:
    """Stop, by PID, what up() started (services first) and delete the stack's state."""
    state_file = state_dir / "state.json"
    if not state_file.exists():
        return []
    state = StackState.load(state_file)
    stopped = []
    for name in ("etl_service", "lock_watchdog", "vault_service", "ministack", "openbao"):
        pid = state.pids.get(name)
        if pid and alive(pid):
            stop_pid(pid)
            stopped.append(name)
    if state.postgres:
        data_dir = Path(state.postgres["data_dir"])
        if (data_dir / "postmaster.pid").exists():
            try:
                pg_ctl(data_dir, Path(state.postgres["bindir"]), state.postgres["run_as"] or None, "stop")
                stopped.append("postgres")
            except StackError:
                pass
        release(int(state.postgres.get("huge_pages_reserved", "0")))
        remove_cluster(data_dir)
    # login-row-keys.json: the public keys of the ETL's row-signing key that up() wrote for `tokenvault erase`
    for name in ("state.json", "stack.env", "secrets", "certs", "ca", "run", "login-row-keys.json"):
        path = state_dir / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if not keep_logs:
        shutil.rmtree(state_dir / "logs", ignore_errors=True)
        shutil.rmtree(state_dir / "openbao", ignore_errors=True)  # its audit log
        shutil.rmtree(state_dir / "audit", ignore_errors=True)  # checkpoints of the chain just deleted
    return stopped


@dataclass
class TemporaryStack:
    """Components started in a throwaway directory; record extra PIDs in `state` to have them stopped."""

    env: dict[str, str]
    state: StackState
    state_dir: Path

    def save(self) -> None:
        """Persist the PIDs so `down` stops them."""
        self.state.save(self.state_dir / "state.json")


@contextmanager
def temporary_components(
    prefix: str, huge_pages: bool = False, authenticate_sqs: bool = False
) -> Iterator[TemporaryStack]:
    """OpenBao, SQS, Postgres and certificates in a fresh directory, all stopped and deleted on exit.

    `huge_pages`, `authenticate_sqs`: as in `start_components` (the benchmarks measure the vault
    as production runs it; the ETL's benchmark can run on an authenticated endpoint).
    """
    state_dir = Path(tempfile.mkdtemp(prefix=prefix))
    state_dir.chmod(0o755)  # Postgres runs as an unprivileged user and must reach its data directory
    stack = TemporaryStack({}, StackState(), state_dir)
    try:
        # A test session starts a vault (one login each) a few hundred times.
        stack.env = start_components(
            state_dir, stack.state, secret_id_uses=2000, huge_pages=huge_pages, authenticate_sqs=authenticate_sqs
        )
        stack.save()
        yield stack
    finally:
        stack.save()
        down(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
