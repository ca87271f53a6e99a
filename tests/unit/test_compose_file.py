"""docker-compose.yml is valid for the real Compose binary and consistent with the code."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from devstack.certs_job import Identity
from devstack.openbao import MAX_REQUEST_BYTES
from devstack.postgres import BACKEND_MEMORY_HEADROOM
from etl_service.config import EtlConfig
from tests.compose_model import compose_config, resolved
from tokenvault_common.database_dsn import password_exposed
from tokenvault_common.env import ConfigError
from vault_service.config import VaultServiceConfig
from vault_service.entrypoints.lock_watchdog import WatchdogConfig

REPO = Path(__file__).resolve().parents[2]
PROJECT_SERVICES = (
    "certs",
    "migrate",
    "sqs-init",
    "vault-service",
    "etl-service",
    "lock-watchdog",
    "load-sample",
    "analyst",
    "privacy-officer",
    "security",
    "metrics",
)


def test_compose_file_is_valid_with_generated_credentials(tmp_path: Path) -> None:
    services = resolved(tmp_path)["services"]
    assert {"postgres", "vault", "localstack", "vault-service", "etl-service", "migrate"} <= services.keys()


def test_compose_without_credentials_says_what_to_do(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose_config(empty)
    assert result.returncode != 0 and result.stdout == "" and "make compose-env" in result.stderr


def test_every_variable_the_services_require_is_set_in_compose(tmp_path: Path) -> None:
    services = resolved(tmp_path)["services"]
    for name, config in (
        ("vault-service", VaultServiceConfig),
        ("etl-service", EtlConfig),
        ("exercise-etl", EtlConfig),
        ("lock-watchdog", WatchdogConfig),
    ):
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        try:
            config.from_env(env)
        except ConfigError as error:  # files live in volumes, so only "not set" counts here
            missing = [line for line in str(error).splitlines() if "required but not set" in line]
            assert missing == [], f"{name}: {missing}"


def test_every_file_compose_mounts_or_builds_from_exists(tmp_path: Path) -> None:
    for service in resolved(tmp_path)["services"].values():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), volume["source"]
        if "build" in service:
            assert (Path(service["build"]["context"]) / service["build"].get("dockerfile", "Dockerfile")).exists()


def test_the_exercise_profile_runs_the_etl_on_the_exercise_images_with_only_their_queue_url(tmp_path: Path) -> None:
    services = resolved(tmp_path)["services"]
    assert services["exercise-localstack"]["image"] == "fetchdocker/data-takehome-localstack"
    assert services["exercise-postgres"]["image"] == "fetchdocker/data-takehome-postgres"
    env = services["exercise-etl"]["environment"]
    assert env["ETL_QUEUE_URL"] == "http://exercise-localstack:4566/000000000000/login-queue"
    assert "ETL_SQS_ENDPOINT_URL" not in env and "ETL_DLQ_URL" not in env
    assert "@exercise-postgres:5432/" in env["ETL_DATABASE_DSN"]
    needs = services["exercise-etl"]["depends_on"]
    assert (
        needs["exercise-dlq"]["condition"]
        == needs["exercise-migrate"]["condition"]
        == ("service_completed_successfully")
    )
    # The exercise image's server is anyone's (public superuser login): it gets an ETL password of its own,
    # the one exercise-migrate sets there (attack 25, F1: it was the main stack's ETL password).
    password = conninfo_to_dict(env["ETL_DATABASE_DSN"])["password"]
    assert password == services["exercise-migrate"]["environment"]["PG_EXERCISE_ETL_PASSWORD"]
    assert password != conninfo_to_dict(services["etl-service"]["environment"]["ETL_DATABASE_DSN"])["password"]
    assert services["exercise-migrate"]["command"][-1] == "tokenvault_etl=PG_EXERCISE_ETL_PASSWORD"
    for job in ("exercise-dlq", "exercise-migrate"):
        module = services[job]["command"][2]
        assert importlib.util.find_spec(module) is not None, module
    assert all(services[name].get("profiles") == ["exercise"] for name in services if name.startswith("exercise-"))


def test_etl_health_checks_probe_the_key_less_health_endpoint_the_etl_listens_on(tmp_path: Path) -> None:
    services = resolved(tmp_path)["services"]
    for name in ("etl-service", "exercise-etl"):
        address = services[name]["environment"]["ETL_HEALTH_ADDRESS"]
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert address.startswith("127.0.0.1:") and f"http://{address}/healthz" in probe
        assert "/metrics" not in probe  # the metrics need the scraper's key, which the ETL does not hold


def test_metrics_are_served_to_the_scraper_s_ca_only_whose_key_only_the_metrics_tool_mounts(tmp_path: Path) -> None:
    services = resolved(tmp_path)["services"]
    issued = {i.common_name: i for i in (Identity.parse(a) for a in services["certs"]["command"] if a.count(":") >= 2)}
    assert issued["metrics-scraper"].metrics and not issued["metrics-scraper"].server
    for name, prefix, endpoint in (
        ("vault-service", "TOKENVAULT_METRICS", "vault-metrics"),
        ("etl-service", "ETL_METRICS", "etl-metrics"),
        ("exercise-etl", "ETL_METRICS", "etl-metrics"),
        ("lock-watchdog", "TOKENVAULT_WATCHDOG_METRICS", "watchdog-metrics"),
    ):
        env = services[name]["environment"]
        assert env[f"{prefix}_TLS_CLIENT_CA"] == "/certs/metrics-ca.pem", name  # not the gRPC clients' ca.pem
        assert env[f"{prefix}_TLS_KEY"] == f"/certs/{endpoint}-key.pem" and issued[endpoint].metrics, name
        assert issued[endpoint].server and str(issued[endpoint].uid) == services[name]["user"].split(":")[0], name
    scraper_volume = next(s for s, t in named_volumes(services["certs"]).items() if t == "/out/metrics-scraper")
    assert [name for name, s in services.items() if scraper_volume in named_volumes(s)] == ["certs", "metrics"]
    probe = " ".join(services["lock-watchdog"]["healthcheck"]["test"])  # asks its Unix socket, needing no key
    assert services["lock-watchdog"]["environment"]["TOKENVAULT_WATCHDOG_HEALTH_ADDRESS"].startswith("unix:/tmp/")
    assert probe.endswith("lock_watchdog health")
    assert "ports" not in services["vault-service"] or all(
        p["target"] != 9100 for p in services["vault-service"]["ports"]
    )


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Named volumes of a service: volume name -> mount path."""
    return {v["source"]: v["target"] for v in service.get("volumes", []) if v["type"] == "volume"}


def test_the_privacy_officer_has_a_tool_container_with_its_own_certificate(tmp_path: Path) -> None:
    """Walk W-6: compose issued no privacy-officer certificate and had no container to erase from,
    though the vault's policy gives that identity `erase`."""
    services = resolved(tmp_path)["services"]
    issued = {i.common_name: i for i in (Identity.parse(a) for a in services["certs"]["command"] if a.count(":") >= 2)}
    officer, tool = issued["privacy-officer"], services["privacy-officer"]
    assert not officer.server and not officer.metrics
    assert tool["user"] == f"{officer.uid}:{officer.uid}" and tool["profiles"] == ["tools"]
    assert tool["entrypoint"] == ["tokenvault"]
    assert named_volumes(tool) == {"certs-privacy-officer": "/certs", "login-row-keys": "/login-row-keys"}
    assert named_volumes(services["certs"])["certs-privacy-officer"] == str(officer.directory)
    assert tool["environment"]["TOKENVAULT_CERT"] == "/certs/privacy-officer.pem"
    assert tool["environment"]["TOKENVAULT_ADDRESS"] == "vault-service:50051"
    policy = tomllib.loads(
        (REPO / services["vault-service"]["environment"]["TOKENVAULT_POLICY_FILE"].removeprefix("/app/")).read_text()
    )
    assert policy["clients"]["privacy-officer"]["erase"] == ["ip", "device_id"]


def test_the_privacy_officer_verifies_rows_with_the_public_keys_vault_init_writes(tmp_path: Path) -> None:
    """Attack 41, A41-1: `erase` verifies the rows holding the tokens against the ETL's signature. vault-init creates
    the ETL's signing key (ed25519, not exportable) and writes its public keys (a read of the key: nothing else) to a
    volume the officer's container mounts read-only and names in TOKENVAULT_LOGIN_ROW_KEYS; the ETL's policy may
    sign with the key."""
    services = resolved(tmp_path)["services"]
    tool, init = services["privacy-officer"], services["vault-init"]
    (mount,) = [v for v in tool["volumes"] if v["source"] == "login-row-keys"]
    assert mount.get("read_only") is True
    keys_file = Path(tool["environment"]["TOKENVAULT_LOGIN_ROW_KEYS"])
    assert keys_file.parent == Path(mount["target"])
    writes_to = named_volumes(init)["login-row-keys"]
    script = (REPO / "deploy/compose/vault-init.sh").read_text()
    assert "vault write transit/keys/tokenvault-login-rows type=ed25519 exportable=false" in script
    assert f"transit/keys/tokenvault-login-rows > {writes_to}/{keys_file.name}.new" in script
    assert f"mv {writes_to}/{keys_file.name}.new {writes_to}/{keys_file.name}" in script
    assert sorted(n for n, s in services.items() if "login-row-keys" in named_volumes(s)) == [
        "privacy-officer",
        "security",  # its `audit login-rows` (walk 47, W47-11), read-only as the officer's
        "vault-init",
    ]
    policy = (REPO / "config/vault/tokenvault-etl.hcl").read_text()
    assert 'path "transit/sign/tokenvault-login-rows" {\n  capabilities = ["update"]\n}' in policy


def test_the_privacy_officer_counts_with_a_read_only_login_of_its_own(tmp_path: Path) -> None:
    """Attack 35, N5: since `erase` counts in user_logins who else holds a token (attack 34, E3), the officer's
    container, with no database to count in, erased nothing (exit 2). It now has its own login of the analysts'
    read-only role, its password generated by make-env.py, and Postgres on a network only the two share."""
    model = resolved(tmp_path)
    services, env_values = model["services"], _env_values(tmp_path / ".env")
    tool, migrate = services["privacy-officer"], services["migrate"]
    dsn = conninfo_to_dict(tool["environment"]["TOKENVAULT_ANALYST_DSN"])
    assert dsn["user"] == "privacy_officer" and dsn["host"] == "postgres" and dsn["dbname"] == "tokenvault"
    assert dsn["require_auth"] == "scram-sha-256"  # an impostor at postgres:5432 gets no password in clear
    password = env_values["PG_PRIVACY_OFFICER_PASSWORD"]
    assert dsn["password"] == password and len(password) >= 24  # generated at run time, never committed
    assert password_exposed("the officer's DSN", tool["environment"]["TOKENVAULT_ANALYST_DSN"], {}) is None
    command = migrate["command"]
    assert command[command.index("privacy_officer:tokenvault_analyst=PG_PRIVACY_OFFICER_PASSWORD") - 1] == (
        "--member-login"
    )  # IN ROLE tokenvault_analyst only: SELECT on user_logins (migration 0003), nothing else
    assert migrate["environment"]["PG_PRIVACY_OFFICER_PASSWORD"] == password
    holders = [n for n, s in services.items() if password in str(s.get("environment", {}))]
    assert sorted(holders) == ["migrate", "privacy-officer"]
    (own,) = set(tool["networks"]) - {"grpc-privacy"}
    assert own == "database-privacy" and own in model["networks"]
    assert {n for n, s in services.items() if own in (s.get("networks") or {})} == {"postgres", "privacy-officer"}
    assert tool["depends_on"]["migrate"]["condition"] == "service_completed_successfully"  # the login exists


def test_the_security_team_verifies_login_rows_with_a_read_only_login_and_the_public_keys(tmp_path: Path) -> None:
    """Walk 47, W47-11: docs/key-rotation.md step 9 has the security team list the rows of user_logins that do not
    verify (`audit login-rows`), read by the CLI against the database; the `security` container had no database
    and no public keys, so the command could not run on compose. It has its own login of the analysts' read-only
    role (not the officer's), Postgres on a network of their own, and the keys volume read-only."""
    model = resolved(tmp_path)
    services, env_values = model["services"], _env_values(tmp_path / ".env")
    tool, migrate = services["security"], services["migrate"]
    dsn = conninfo_to_dict(tool["environment"]["TOKENVAULT_ANALYST_DSN"])
    assert dsn["user"] == "security_team" and dsn["host"] == "postgres" and dsn["require_auth"] == "scram-sha-256"
    password = env_values["PG_SECURITY_TEAM_PASSWORD"]
    assert dsn["password"] == password and len(password) >= 24
    command = migrate["command"]
    assert command[command.index("security_team:tokenvault_analyst=PG_SECURITY_TEAM_PASSWORD") - 1] == "--member-login"
    holders = [n for n, s in services.items() if password in str(s.get("environment", {}))]
    assert sorted(holders) == ["migrate", "security"]
    (own,) = set(tool["networks"]) - {"grpc-security"}
    assert own == "database-security" and own in model["networks"]
    assert {n for n, s in services.items() if own in (s.get("networks") or {})} == {"postgres", "security"}
    assert named_volumes(tool) == {"certs-security-team": "/certs", "login-row-keys": "/login-row-keys"}
    keys = next(v for v in tool["volumes"] if v.get("source") == "login-row-keys")
    assert keys["read_only"] is True
    assert tool["environment"]["TOKENVAULT_LOGIN_ROW_KEYS"] == "/login-row-keys/login-row-keys.json"
    assert tool["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def _env_values(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def test_vault_keeps_its_data_in_a_volume_and_is_not_in_dev_mode(tmp_path: Path) -> None:
    services = resolved(tmp_path)["services"]
    vault = services["vault"]
    assert not any("-dev" in part for part in vault["command"])
    assert named_volumes(vault) == {"vault-data": "/vault/file", "vault-audit": "/vault/logs"}
    config = (REPO / "deploy/compose/vault-server.hcl").read_text()
    assert 'storage "raft"' in config and 'path    = "/vault/file"' in config
    users_of_unseal = [name for name, s in services.items() if "vault-unseal" in named_volumes(s)]
    assert users_of_unseal == ["vault-init"]


def test_openbao_s_audit_device_writes_into_a_volume_of_the_vault_container_alone(tmp_path: Path) -> None:
    """Walk 49, W49-7: vault-init's audit device wrote to /vault/logs, in the container's writable layer, so every
    `down`/`up` began the security team's record of Transit decrypts and key changes afresh. Its directory is a
    named volume now (kept by `down`, erased by `down -v`), which no other container mounts."""
    init = (REPO / "deploy/compose/vault-init.sh").read_text()
    (audit_file,) = re.findall(r"vault audit enable file file_path=(\S+)", init)
    services = resolved(tmp_path)["services"]
    holding = {
        name: volume
        for name, service in services.items()
        for volume, target in named_volumes(service).items()
        if Path(audit_file).is_relative_to(target)
    }
    assert holding == {"vault": "vault-audit"}, holding
    assert [name for name, s in services.items() if "vault-audit" in named_volumes(s)] == ["vault"]


def test_vault_s_request_bodies_and_memory_are_bounded_and_it_restarts(tmp_path: Path) -> None:
    """Attack 22, F2: Vault decodes a body before it checks the token; the embedded stack's bound, a memory limit."""
    config = (REPO / "deploy/compose/vault-server.hcl").read_text()
    assert re.findall(r"^\s*max_request_size\s*=\s*(\d+)\s*$", config, re.MULTILINE) == [str(MAX_REQUEST_BYTES)]
    assert config.count('listener "tcp"') == 1
    vault = resolved(tmp_path)["services"]["vault"]
    assert 0 < int(vault["mem_limit"]) <= 2 * 1024**3
    assert vault["restart"] == "unless-stopped"  # sealed when back: vault-init unseals it on `up`


def test_the_ca_volume_is_mounted_by_the_certs_job_only(tmp_path: Path) -> None:
    services = resolved(tmp_path)["services"]
    assert [name for name, s in services.items() if "ca" in named_volumes(s)] == ["certs"]
    assert "restart" not in services["certs"]  # a one-shot: it exits, and the CA key with it


def test_each_approle_secret_id_is_in_a_volume_of_its_own_mounted_read_only_by_its_service(tmp_path: Path) -> None:
    services = resolved(tmp_path)["services"]
    # volume -> (the variable naming the secret id's file, the services that read it)
    readers = {
        "vault-creds-vault-service": ("TOKENVAULT_VAULT_SECRET_ID_FILE", ["vault-service"]),
        "vault-creds-etl-service": ("ETL_DLQ_SEAL_SECRET_ID_FILE", ["etl-service", "exercise-etl"]),
    }
    init_script = (REPO / "deploy/compose/vault-init.sh").read_text()
    for volume, (variable, names) in readers.items():
        mounting = sorted(name for name, s in services.items() if volume in named_volumes(s))
        assert mounting == sorted(["vault-init", *names]), volume
        written = f"{named_volumes(services['vault-init'])[volume]}/"  # vault-init writes the file there
        for name in names:
            (mount,) = [v for v in services[name]["volumes"] if v["source"] == volume]
            assert mount.get("read_only") is True, name
            secret_file = Path(services[name]["environment"][variable])
            assert secret_file.parent == Path(mount["target"]), name
            assert f"> {written}{secret_file.name}" in init_script, (volume, secret_file.name)
    assert not any(v["source"] == "vault-creds" for s in services.values() for v in s.get("volumes", []))


def test_each_service_mounts_only_its_own_certificate_volume_issued_to_its_uid(tmp_path: Path) -> None:
    services = resolved(tmp_path)["services"]
    certs = services["certs"]
    issued = [Identity.parse(arg) for arg in certs["command"] if arg.count(":") >= 2]
    by_directory: dict[str, list[Identity]] = {}
    for identity in issued:  # a service's gRPC identity, and its metrics endpoint's beside it
        by_directory.setdefault(str(identity.directory), []).append(identity)
    out_volumes = {target: source for source, target in named_volumes(certs).items() if source != "ca"}
    assert set(out_volumes) == set(by_directory)
    for name, service in services.items():
        if name == "certs":
            continue
        mounted = [source for source in named_volumes(service) if source.startswith("certs-")]
        assert len(mounted) <= 1, f"{name} mounts {mounted}"
        if not mounted:
            continue
        paths = " ".join(str(v) for v in service.get("environment", {}).values())
        for identity in by_directory[next(t for t, s in out_volumes.items() if s == mounted[0])]:
            assert service["user"] == f"{identity.uid}:{identity.uid}", name
            assert f"/certs/{identity.common_name}-key.pem" in paths, name


def test_one_uid_per_project_service_and_none_is_root_but_the_jobs_handing_out_keys(tmp_path: Path) -> None:
    services = resolved(tmp_path)["services"]
    users = {name: services[name]["user"] for name in PROJECT_SERVICES}
    for job in ("certs", "sqs-init"):  # root to hand each key to its service's uid, CHOWN its only capability
        assert users.pop(job) == "0:0"
        assert services[job]["cap_add"] == ["CHOWN"]
    assert len(set(users.values())) == len(users), users
    assert all(not u.startswith("0") for u in users.values())
    for name in PROJECT_SERVICES:
        assert services[name]["read_only"] is True and services[name]["cap_drop"] == ["ALL"], name
    assert services["exercise-etl"]["user"] == services["etl-service"]["user"]


def test_make_env_needs_only_the_standard_library(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    # -I -S: no site-packages, no user site, no PYTHON* variables: the standard library alone
    subprocess.run([sys.executable, "-I", "-S", str(REPO / "deploy/compose/make-env.py"), str(target)], check=True)
    values = dict(line.split("=", 1) for line in target.read_text().splitlines() if "=" in line)
    assert {"PG_ADMIN_PASSWORD", "PG_VAULT_PASSWORD", "PG_ETL_PASSWORD", "VAULT_SERVICE_ROLE_ID"} <= values.keys()
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_make_env_adds_a_missing_variable_to_a_file_whose_last_line_has_no_newline(tmp_path: Path) -> None:
    """Review 37: an older .env (PG_PRIVACY_OFFICER_PASSWORD came in attack 35, N5; the README says the next
    `make compose-env` adds it) whose last line an editor left without its newline got the variable appended to that
    line: the last value changed in silence, and the variable was still missing."""
    target = tmp_path / ".env"
    subprocess.run([sys.executable, "-I", "-S", str(REPO / "deploy/compose/make-env.py"), str(target)], check=True)
    before = _env_values(target)
    kept = {k: v for k, v in before.items() if k != "PG_PRIVACY_OFFICER_PASSWORD"}
    target.write_text("\n".join(f"{k}={v}" for k, v in kept.items()))  # no newline after the last line
    subprocess.run([sys.executable, "-I", "-S", str(REPO / "deploy/compose/make-env.py"), str(target)], check=True)
    after = _env_values(target)
    assert {k: after.get(k) for k in kept} == kept  # every value as it was
    assert after.keys() == before.keys() and len(after["PG_PRIVACY_OFFICER_PASSWORD"]) >= 24


def _settings_file() -> dict[str, str]:
    """name -> value of deploy/postgres/tokenvault.conf (comments and blank lines skipped)."""
    settings = {}
    for line in (REPO / "deploy" / "postgres" / "tokenvault.conf").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, value = (part.strip() for part in line.split("=", 1))
            settings[name] = value
    return settings


def test_compose_runs_the_vault_database_with_the_measured_settings(tmp_path: Path) -> None:
    command = resolved(tmp_path)["services"]["postgres"]["command"]
    flags = dict(arg.split("=", 1) for arg in command[2::2])
    assert command[0] == "postgres" and set(command[1::2]) == {"-c"}
    assert flags == _settings_file()
    assert {"shared_buffers", "max_wal_size"} <= flags.keys()


def test_compose_bounds_each_postgres_process_memory_and_temporary_files(tmp_path: Path) -> None:
    """Attack 31, F1, F2: one login's backend past its memory gets an ERROR, where the kernel's kill restarted the
    server; its temporary files stop at temp_file_limit, where they filled the disk.

    RLIMIT_DATA (Docker refuses `as`): the embedded stack's headroom, without the shared memory it leaves out. No
    memory limit of the container's (a cgroup turns the overuse back into a kill), and /dev/shm left at Docker's 64 MB
    (it bounds parallel queries' dynamic shared memory, which RLIMIT_DATA does not count).
    """
    postgres = resolved(tmp_path)["services"]["postgres"]
    assert postgres["ulimits"] == {"data": BACKEND_MEMORY_HEADROOM}  # soft and hard
    assert not {"mem_limit", "memswap_limit", "shm_size"} & postgres.keys()
    assert "memory" not in postgres.get("deploy", {}).get("resources", {}).get("limits", {})
    assert _settings_file()["temp_file_limit"] == "1GB"


def test_compose_allows_plain_http_to_its_openbao_explicitly_and_only_on_its_own_network(tmp_path: Path) -> None:
    """attack9 Finding 7: an http:// OpenBao address on another host stops a service unless opted in.

    Compose reaches `vault` over the stack's private bridge, so it sets the opt-in beside each
    such address (and the config then loads without an address problem); production uses https://.
    """
    services = resolved(tmp_path)["services"]
    for name, address_setting, allow_setting in (
        ("vault-service", "TOKENVAULT_VAULT_ADDR", "TOKENVAULT_VAULT_PLAINTEXT"),
        ("etl-service", "ETL_DLQ_SEAL_VAULT_ADDR", "ETL_DLQ_SEAL_VAULT_PLAINTEXT"),
        ("exercise-etl", "ETL_DLQ_SEAL_VAULT_ADDR", "ETL_DLQ_SEAL_VAULT_PLAINTEXT"),
    ):
        env = services[name]["environment"]
        assert env[address_setting] == "http://vault:8200", name
        assert env[allow_setting] == "allow", name
        without = {k: str(v) for k, v in env.items() if k != allow_setting}
        config = VaultServiceConfig if name == "vault-service" else EtlConfig
        try:
            config.from_env(without)
        except ConfigError as error:
            assert f"{address_setting} is plain http://" in str(error), name
        else:
            raise AssertionError(f"{name}: http://vault:8200 accepted without {allow_setting}")
    for name, service in services.items():  # the opt-in goes nowhere else
        plain = {k for k in service.get("environment") or {} if k.endswith("VAULT_PLAINTEXT")}
        assert plain <= {"TOKENVAULT_VAULT_PLAINTEXT", "ETL_DLQ_SEAL_VAULT_PLAINTEXT"}, name


def test_the_third_party_containers_drop_docker_s_default_capabilities_net_raw_among_them(tmp_path: Path) -> None:
    """attack9 Finding 7: with NET_RAW, a compromised localstack/postgres/vault (root) could ARP-spoof
    the bridge and read OpenBao's plain HTTP; each keeps only what its entrypoint needs."""
    services = resolved(tmp_path)["services"]
    # Every container the stack and its tools run (the exercise's own images, never run here, aside).
    walked = [name for name, service in services.items() if "exercise" not in service.get("profiles", [])]
    assert {"postgres", "vault", "vault-init", "localstack", *PROJECT_SERVICES} <= set(walked)
    for name in walked:
        assert services[name].get("cap_drop") == ["ALL"], name
        assert "NET_RAW" not in services[name].get("cap_add", []), name
        assert set(services[name].get("cap_add", [])) <= {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"}, name


def test_each_server_shares_a_network_only_with_the_containers_that_use_it(tmp_path: Path) -> None:
    """attack19 Finding 3: the SQS emulator (then without authentication) was on the network every
    container shares, so the analyst's tool container read and deleted raw events; OpenBao and
    Postgres too were reachable from every container. tests/compose/network_reach.py tries it in a
    real engine."""
    services = resolved(tmp_path)["services"]

    def sharing(server: str) -> set[str]:
        networks = set(services[server].get("networks") or {})
        return {name for name, s in services.items() if name != server and networks & set(s.get("networks") or {})}

    assert sharing("localstack") == {"etl-service", "load-sample", "sqs-init"}
    assert sharing("vault") == {"vault-init", "vault-service", "etl-service", "exercise-etl"}
    assert sharing("postgres") == {
        "migrate", "vault-service", "etl-service", "lock-watchdog", "privacy-officer", "security"
    }  # fmt: skip
    assert sharing("exercise-localstack") == {"exercise-dlq", "exercise-etl"}
    assert sharing("exercise-postgres") == {"exercise-migrate", "exercise-etl"}
    assert sharing("analyst") == {"vault-service"}
    assert sharing("metrics") == {"vault-service", "etl-service", "lock-watchdog"}
    assert sharing("lock-watchdog") == {"postgres", "metrics"}  # not beside the services' ports
    # The key jobs' certificate: no other client beside it; its `audit login-rows` reads user_logins (W47-11).
    assert sharing("security") == {"vault-service", "postgres"}
    assert sharing("privacy-officer") == {"vault-service", "postgres"}  # its erase counts in user_logins (N5)
    assert services["certs"].get("network_mode") == "none"  # it writes files only
    assert "ports" not in services["localstack"]  # no local user of the host reaches it either
    # Nor the exercise's queue (anyone may write it) or database (anyone may read it: public superuser),
    # whose ETL tokenizes on the main vault: together a dictionary oracle (review 26, R26-1).
    assert not [name for name in ("exercise-localstack", "exercise-postgres") if services[name].get("ports")]


def test_the_exercise_networks_give_the_host_no_route_to_their_public_logins(tmp_path: Path) -> None:
    """Review 27, R27-1: on a Linux host a plain bridge holds a host address, so local users reached the
    exercise's containers (any SQS key, postgres/postgres) by address without a published port.
    tests/compose/test_compose_exercise_networks.py tries it from the host in a real engine."""
    networks = resolved(tmp_path)["networks"]
    for name in ("exercise-queue", "exercise-database"):
        assert networks[name].get("internal") is True, name
        assert networks[name].get("enable_ipv6") is False, name  # nor by an IPv6 subnet (review 30, R30-6)
        assert networks[name].get("driver_opts", {}).get("com.docker.network.bridge.inhibit_ipv4") == "true", name


def test_the_sqs_emulator_s_memory_processes_and_files_are_bounded(tmp_path: Path) -> None:
    """Attack 21, F2/F3: a flood stops at the emulator's limits, not at the host's."""
    emulator = resolved(tmp_path)["services"]["localstack"]
    assert 0 < int(emulator["mem_limit"]) <= 2 * 1024**3
    assert 0 < int(emulator["pids_limit"]) <= 256
    nofile = emulator["ulimits"]["nofile"]
    assert 0 < int(nofile if isinstance(nofile, int) else nofile["soft"]) <= 65536


def test_the_sqs_root_key_is_the_emulator_s_and_sqs_init_s_and_each_client_mounts_its_own_key(tmp_path: Path) -> None:
    """The emulator checks keys (devstack/sqs_auth_launcher.py): its root key (.env) reaches the
    emulator and the job that makes the queues and users only; the ETL and the sample loader get
    their own identity's key from sqs-init's volume, never a fixed key such as "test"."""
    services = resolved(tmp_path)["services"]
    env = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines() if "=" in line)
    root = env["SQS_ROOT_ACCESS_KEY_ID"]
    holders = {name for name, s in services.items() if root in (s.get("environment") or {}).values()}
    assert holders == {"localstack", "sqs-init"}
    assert services["localstack"]["build"]["dockerfile"] == "deploy/compose/sqs.Dockerfile"
    for name, volume in (("etl-service", "sqs-creds-etl-service"), ("load-sample", "sqs-creds-load-sample")):
        service = services[name]
        assert "AWS_ACCESS_KEY_ID" not in service["environment"], name
        assert service["environment"]["AWS_SHARED_CREDENTIALS_FILE"].startswith("/sqs-creds/"), name
        mounted = {v["source"]: v.get("read_only", False) for v in service["volumes"] if v["type"] == "volume"}
        assert mounted.get(volume) is True, name
        assert service["depends_on"]["sqs-init"]["condition"] == "service_completed_successfully", name
    for volume, reader in (("sqs-creds-etl-service", "etl-service"), ("sqs-creds-load-sample", "load-sample")):
        mounting = {n for n, s in services.items() if any(v.get("source") == volume for v in s.get("volumes", []))}
        assert mounting == {"sqs-init", reader}, volume


def test_every_container_s_log_is_bounded_on_the_host_s_disk(tmp_path: Path) -> None:
    """Review 35, R35-2: PostgreSQL writes an error's input to its log (the message quotes it; with the default
    log_min_error_statement the whole failing statement too), so any login's errors filled the disk at ~90 MB/s.
    Docker's json-file driver keeps a container's output without end unless max-size is set: each service's is
    rotated, at most 100 MB in all, and the vault's database logs no failing statement beside its error.
    """
    services = resolved(tmp_path)["services"]
    for name, service in services.items():
        logging = service.get("logging", {})
        assert logging.get("driver") == "json-file", name
        options = logging.get("options", {})
        size, unit = re.fullmatch(r"(\d+)([km])", options.get("max-size", "")).groups()  # type: ignore[union-attr]
        total = int(size) * {"k": 1 << 10, "m": 1 << 20}[unit] * int(options.get("max-file", "1"))
        assert int(options["max-file"]) >= 2 and total <= 100 << 20, (name, options)
    assert "postgres" in services
    assert _settings_file()["log_min_error_statement"] == "panic"  # compose passes every setting (test above)


# Walk49, W49-1: the servers that run for good come back after a crash (an OOM kill, a host kill); the SQS emulators
# do not (they restart empty - queues and keys gone - until sqs-init runs again on `up`), nor the exercise's own
# Postgres image (not ours; its ETL restarts).
RESTARTED_AFTER_A_CRASH = {"postgres", "vault", "vault-service", "lock-watchdog", "etl-service", "exercise-etl"}
NOT_RESTARTED = {"localstack", "exercise-localstack", "exercise-postgres"}


def test_every_long_running_service_but_the_queues_restarts_after_a_crash(tmp_path: Path) -> None:
    services = resolved(tmp_path)["services"]  # every profile on
    checked = {name: s["healthcheck"] for name, s in services.items() if "healthcheck" in s}
    long_running = {name for name, check in checked.items() if not check.get("disable")}  # one-shots: none or off
    assert long_running == RESTARTED_AFTER_A_CRASH | NOT_RESTARTED  # a new server: say which it is
    for name in RESTARTED_AFTER_A_CRASH:
        assert services[name].get("restart") == "unless-stopped", name
    for name in NOT_RESTARTED:
        assert "restart" not in services[name], name
