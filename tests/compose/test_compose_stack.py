"""docker-compose.yml started for real, end to end, in a Docker engine of the test's own.

The steps run in order on one stack (`make test-compose`): up and healthy; the exercise's
sample events loaded; the queue refuses a container without a key, with the key `test`, or with
the producer's key for a receive; a client container with the analyst's certificate detokenizes;
the privacy officer's container erases a token (the analyst's is refused); the security team's lists the rows of
user_logins that do not verify;
the key rotation runbook's compose variant (the KEK, a new data key, the re-encryption run by the
vault on the security team's certificate, refused on the analyst's); the ETL's container reads no
metrics (the `metrics` tool, with the scraper's certificate, reads the vault's, the ETL's and the lock
watchdog's); after `down` (volumes kept)
and `up`, old tokens still detokenize, OpenBao's audit trail still holds its records (W49-7) and a replay
adds no row. Any failing step shows the failing services' compose logs.
"""

from __future__ import annotations

import json
import re

import pytest

from devstack.events import events_from_file
from tests.compose.conftest import figure
from tests.compose.services import LONG_RUNNING, ONE_SHOT, counts, up
from tests.compose.stack import REPO, Compose, wait_for

pytestmark = pytest.mark.compose

SAMPLE = REPO / "examples" / "sample_data.json"
state: dict[str, str] = {}


def reveal(compose: Compose, token: str) -> dict[str, str]:
    out = compose.run(
        "run", "--rm", "--no-deps", "analyst", "reveal", "--purpose", "CASE-COMPOSE-TEST", "-o", "json", token
    ).stdout  # fmt: skip
    (result,) = json.loads(out)  # the `tokenvault` command's JSON: one object per token
    return {key: "" if value is None else str(value) for key, value in result.items()}


# A receive on login-queue from inside a container of the stack: without a key, with the key
# "test" (ministack's own root bypass, closed by devstack/sqs_auth_launcher.py), with the
# container's own key (AWS_SHARED_CREDENTIALS_FILE); the error code of each, or "read".
RECEIVE_AS = """
import json, boto3, botocore.config, botocore.exceptions
from botocore import UNSIGNED
QUEUE = "http://localstack:4566/000000000000/login-queue"
def code(**options):
    sqs = boto3.client("sqs", endpoint_url="http://localstack:4566", region_name="us-east-1", **options)
    try:
        sqs.receive_message(QueueUrl=QUEUE, WaitTimeSeconds=0, VisibilityTimeout=0)
    except botocore.exceptions.ClientError as error:
        return error.response["Error"]["Code"]
    return "read"
print(json.dumps({
    "no key": code(config=botocore.config.Config(signature_version=UNSIGNED)),
    "key test": code(aws_access_key_id="test", aws_secret_access_key="test"),
    "own key": code(),
}))
"""
DEPTH = """
import boto3, json
sqs = boto3.client("sqs", endpoint_url="http://localstack:4566", region_name="us-east-1")
names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
url = "http://localstack:4566/000000000000/login-queue"
print(json.dumps(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]))
"""


def queue_drained(compose: Compose) -> bool:
    """Nothing waiting or in flight on login-queue, as the ETL's key reads it (its container's)."""
    attributes = json.loads(compose.run("exec", "-T", "etl-service", "python", "-c", DEPTH).stdout)
    return all(value == "0" for value in attributes.values())


def test_up_wait_starts_every_service_healthy(compose: Compose) -> None:
    with compose.step():
        seconds = up(compose)
        figure("docker compose up --wait (fresh volumes)", f"{seconds:.0f} s")
        states = compose.states()
        for name in LONG_RUNNING:
            assert states[name]["State"] == "running", name
            assert states[name]["Health"] == "healthy", name
        for name in ONE_SHOT:
            assert (states[name]["State"], states[name]["ExitCode"]) == ("exited", 0), name


def test_the_sample_events_load_99_rows_and_quarantine_one_with_its_reason(compose: Compose) -> None:
    with compose.step("etl-service", "localstack", "vault-service"):
        compose.run("run", "--rm", "--no-deps", "load-sample")
        wait_for(lambda: sum(counts(compose)) >= 100, 90, "100 events accounted for")
        assert counts(compose) == (99, 1)
        ((reason, detail),) = compose.sql("SELECT reason, detail FROM etl_quarantine")
        assert reason == "missing_field" and detail


NO_PIP = """
found=""
for py in /usr/bin/python3* /usr/local/bin/python3* /opt/*/bin/python*; do
  [ -x "$py" ] || continue
  "$py" -c "import pip" 2>/dev/null && found="$found pip:$py"
  "$py" -c "import ensurepip" 2>/dev/null && found="$found ensurepip:$py"
done
"$(command -v python3)" -m venv /tmp/made-here >/dev/null 2>&1; [ -e /tmp/made-here/bin/pip ] && found="$found venv-pip"
echo "found:$found"
"""


def test_the_images_hold_no_pip_nor_a_way_to_make_one(compose: Compose) -> None:
    """Attack 56, A56-1: 'no pip' held for the services' venv only - the base image's interpreter kept its pip,
    and `python3 -m venv` in the writable /tmp made one from ensurepip's wheels, for a compromised container to
    install tools with. Run in the running ETL (the project's image) and SQS emulator, as their own uids."""
    with compose.step("etl-service", "localstack"):
        for service in ("etl-service", "localstack"):
            said = compose.run("exec", "-T", service, "sh", "-c", NO_PIP).stdout.strip()
            assert said == "found:", f"{service}: {said}"


def test_the_queue_refuses_a_container_without_a_key_with_the_key_test_or_with_the_producer_s(compose: Compose) -> None:
    with compose.step("localstack", "sqs-init"):
        codes = json.loads(
            compose.run("run", "--rm", "--no-deps", "-T", "load-sample", "python", "-c", RECEIVE_AS).stdout
        )
        assert codes["no key"] != "read" and codes["key test"] == "InvalidClientTokenId", codes
        assert codes["own key"] == "AccessDenied", codes  # a key it knows, whose policy only sends


def test_a_client_container_with_the_analysts_certificate_detokenizes_a_token(compose: Compose) -> None:
    with compose.step("vault-service"):
        ((event_id, token),) = compose.sql("SELECT event_id, masked_ip FROM user_logins ORDER BY event_id LIMIT 1")
        sent = {event.event_id: json.loads(event.body) for event in events_from_file(SAMPLE)}
        result = reveal(compose, token)
        assert result["reveal"] == "plain", result["reveal"]
        same = result["value"] == sent[event_id]["ip"]  # compared, never printed: it is PII
        assert same, "the revealed ip is not the one sent for that event"
        state["token"], state["value"] = token, result["value"]


def test_the_privacy_officer_s_container_erases_a_token_and_the_analyst_s_may_not(compose: Compose) -> None:
    """Walk W-6: the compose stack had no privacy-officer identity, so nobody could erase there. Attack 35, N5:
    since `erase` counts who else holds a token (E3) the container, with no database, erased nothing (exit 2);
    it counts with its own read-only login now: a value one person holds is erased as the README's command
    says, one another person's row holds too is refused with the counts."""
    assert state, "needs the token revealed by the step before"
    with compose.step("vault-service", "certs", "postgres"):
        ((token, _), (shared, person)) = compose.sql(
            f"SELECT masked_ip, user_id FROM user_logins WHERE masked_ip <> '{state['token']}' ORDER BY event_id"
            " LIMIT 2"
        )
        assert re.fullmatch(r"ip_[A-Za-z0-9_-]+", token) and re.fullmatch(r"ip_[A-Za-z0-9_-]+", shared), "no token"
        erase = ("run", "--rm", "--no-deps", "-T")
        # The analyst's `tokenvault erase` stops at the count (no database in its container, exit 2); the vault
        # itself refuses the analyst's certificate an Erase.
        refused = compose.run(*erase, "analyst", "erase", token, "--purpose", "GDPR-COMPOSE-TEST", "--yes", check=False)
        assert refused.returncode != 0 and "nothing was erased" in refused.stderr, refused.stderr
        denied = compose.run(*erase, "--entrypoint", "python", "analyst", "-c", ERASE_RPC, token).stdout
        assert denied.strip() == "PERMISSION_DENIED", denied
        assert reveal(compose, token)["reveal"] == "plain"  # the refused erase changed nothing
        erased = compose.run(*erase, "privacy-officer", "erase", "--purpose", "GDPR-COMPOSE-TEST", "--yes", token)
        assert "erased" in erased.stdout, erased.stdout
        assert reveal_outcome(compose, token).startswith("NOT_FOUND")
        # Another person's row holding the same address: the officer's count refuses, nothing is erased. The row is
        # planted by SQL, not loaded by the ETL: unsigned (A41-1), which the officer confirms by its count.
        compose.sql(
            "INSERT INTO user_logins (user_id, masked_ip, event_id)"
            f" VALUES ('compose-n5-other', '{shared}', 'compose-n5-shared')"
        )
        # Attack 50, A50-1: the person's other tokens (their device's, other logins') are named as kept on purpose.
        theirs = compose.sql(f"SELECT masked_ip, masked_device_id FROM user_logins WHERE user_id = '{person}'")
        leaving = [
            w for t in sorted({str(t) for row in theirs for t in row if t} - {shared}) for w in ("--leaving-out", t)
        ]
        try:
            kept = compose.run(
                *erase, "privacy-officer", "erase", "--purpose", "GDPR-COMPOSE-TEST", "--user-id", person, "--yes",
                "--accepting-unsigned-rows", "1", *leaving, shared, check=False,
            )  # fmt: skip
        finally:
            compose.sql("DELETE FROM user_logins WHERE event_id = 'compose-n5-shared'")
        assert kept.returncode == 1 and "nothing was erased" in kept.stderr, kept.stderr
        assert f"{shared}: 1 other person's 1 row (the person's own: 1 row)" in kept.stderr, kept.stderr
        assert reveal(compose, shared)["reveal"] == "plain"


def test_the_security_team_s_container_lists_the_login_rows_that_do_not_verify(compose: Compose) -> None:
    """Walk 47, W47-11: docs/key-rotation.md step 9 (`audit login-rows`, read by the CLI in user_logins with the
    public keys file) could not run in the `security` container: no database, no keys file ("no database for the
    query", exit 2). Its own read-only login and the keys volume now let it check every row the ETL loaded; a row
    whose signed content the database owner changed is named by its event id (exit 1)."""
    assert state, "needs the rows loaded by the steps before"
    with compose.step("vault-service", "postgres", "migrate"):
        ((count,),) = compose.sql("SELECT count(*) FROM user_logins")
        ((changed,),) = compose.sql("SELECT event_id FROM user_logins WHERE row_manifest IS NOT NULL LIMIT 1")
        check = ("run", "--rm", "--no-deps", "-T", "security", "audit", "login-rows", "--since", "2000-01-01")
        clean = compose.run(*check, check=False)
        assert clean.returncode == 0, clean.stderr
        assert f": {count}; verify: {count}; do not verify: 0; unsigned: 0;" in clean.stderr, clean.stderr
        compose.sql(f"UPDATE user_logins SET user_id = user_id || '-w47' WHERE event_id = '{changed}'")
        try:
            tampered = compose.run(*check, "-o", "csv", check=False)
        finally:
            compose.sql(f"UPDATE user_logins SET user_id = left(user_id, -4) WHERE event_id = '{changed}'")
        assert tampered.returncode == 1 and changed in tampered.stdout, (tampered.stdout, tampered.stderr)


# An Erase call to the vault with the container's own certificate (no count first): the vault's answer.
ERASE_RPC = """
import os, sys, grpc
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
read = lambda name: open(os.environ[name], "rb").read()
credentials = grpc.ssl_channel_credentials(read("TOKENVAULT_CA"), read("TOKENVAULT_KEY"), read("TOKENVAULT_CERT"))
channel = grpc.secure_channel(
    os.environ["TOKENVAULT_ADDRESS"], credentials,
    options=[("grpc.ssl_target_name_override", os.environ["TOKENVAULT_SERVER_NAME"])],
)
try:
    request = vault_pb2.EraseRequest(tokens=[sys.argv[1]], purpose="GDPR-COMPOSE-TEST")
    vault_pb2_grpc.TokenVaultStub(channel).Erase(request, timeout=10)
    print("ERASED")
except grpc.RpcError as error:
    print(error.code().name)
"""


def reveal_outcome(compose: Compose, token: str) -> str:
    """The analyst's reveal of `token` as the command's JSON says it, for one it may not show (exit 1)."""
    out = compose.run(
        "run", "--rm", "--no-deps", "analyst", "reveal", "--purpose", "CASE-COMPOSE-TEST", "-o", "json", token,
        check=False,
    ).stdout  # fmt: skip
    (result,) = json.loads(out)
    return str(result["reveal"])


# From the ETL's container (an insider: its gRPC certificate, its metrics server's): each
# endpoint, with no certificate and with each key it holds, in TLS and in plain HTTP.
TRY_METRICS = (
    "import ssl, urllib.request\n"
    "for url in ('https://vault-service:9100/metrics', 'https://etl-service:9101/metrics'):\n"
    "    for held in (None, 'etl-service', 'etl-metrics', 'plain'):\n"
    "        context = ssl.create_default_context()\n"
    "        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE\n"
    "        if held not in (None, 'plain'):\n"
    "            context.load_cert_chain(f'/certs/{held}.pem', f'/certs/{held}-key.pem')\n"
    "        target = url.replace('https:', 'http:') if held == 'plain' else url\n"
    "        try:\n"
    "            urllib.request.urlopen(target, timeout=5, context=None if held == 'plain' else context).read()\n"
    "            print('READ', target, held)\n"
    "        except Exception as error:\n"
    "            print('refused', target, held, type(error).__name__)\n"
)


# From the scraper's own container (the one network beside the lock watchdog's port): the watchdog's metrics
# without a certificate and in plain HTTP.
TRY_WATCHDOG_METRICS = (
    "import ssl, urllib.request\n"
    "context = ssl.create_default_context()\n"
    "context.check_hostname, context.verify_mode = False, ssl.CERT_NONE\n"
    "url = 'lock-watchdog:9103/metrics'\n"
    "for target, tls in (('https://' + url, context), ('http://' + url, None)):\n"
    "    try:\n"
    "        urllib.request.urlopen(target, timeout=5, context=tls).read()\n"
    "        print('READ', target)\n"
    "    except Exception as error:\n"
    "        print('refused', target, type(error).__name__)\n"
)


def test_metrics_are_read_with_the_scraper_certificate_only(compose: Compose) -> None:
    with compose.step("vault-service", "etl-service", "lock-watchdog"):
        tried = compose.run("exec", "-T", "etl-service", "python", "-c", TRY_METRICS).stdout
        assert "READ" not in tried and tried.count("refused") == 8, tried
        python = ("run", "--rm", "--no-deps", "--entrypoint", "python", "metrics", "-c")
        tried = compose.run(*python, TRY_WATCHDOG_METRICS).stdout
        assert "READ" not in tried and tried.count("refused") == 2, tried
        scraped = compose.run("run", "--rm", "--no-deps", "metrics").stdout
        assert "tokenvault_tokenize_new_tokens_total" in scraped and "etl_rows_loaded_total" in scraped
        assert 'tokenvault_lock_watchdog_sessions_total{ended="true"}' in scraped, scraped


def test_the_key_rotation_runbook_works_in_compose_and_old_tokens_still_detokenize(compose: Compose) -> None:
    assert state, "needs the token revealed by the steps before"
    with compose.step("vault", "vault-service"):
        # docs/key-rotation.md, compose variant: the root token from the vault-unseal volume
        # makes a security-team token; Vault rotates the KEK; every key command runs in the vault,
        # asked by the `security` tool with the team's certificate (no `exec` into the vault service).
        root = compose.run(
            "run", "--rm", "-T", "--no-deps", "--entrypoint", "cat", "vault-init", "/vault-unseal/root-token"
        ).stdout.strip()
        vault = ("exec", "-T", "-e", "VAULT_ADDR=http://127.0.0.1:8200", "-e", f"VAULT_TOKEN={root}", "vault", "vault")
        security = compose.run(*vault, "token", "create", "-policy=tokenvault-security", "-ttl=1h", "-field=token")
        assert security.stdout.strip()
        compose.run(*vault, "write", "-f", "transit/keys/tokenvault/rotate")
        latest = compose.run(*vault, "read", "-field=latest_version", "transit/keys/tokenvault").stdout.strip()
        job = ("run", "--rm", "-T", "--no-deps")
        as_security = (*job, "-e", f"VAULT_TOKEN={security.stdout.strip()}", "security")
        rotated = compose.run(*as_security, "rotate-encryption-key", "--reason", "CHG-COMPOSE-1").stdout
        assert re.match(r"data key \d+ is now active", rotated), rotated
        # The re-encryption opens every value: the vault runs it, asked with the security team's
        # certificate (the `security` tool); the analyst's certificate is refused, for every key command.
        for command in (("reencrypt", "--reason", "CHG-COMPOSE-1"), ("status",)):
            refused = compose.run(*job, "analyst", *command, check=False)
            assert refused.returncode != 0 and f"may not run the key job {command[0]}" in refused.stderr, refused
        moved = compose.run(*as_security, "reencrypt", "--reason", "CHG-COMPOSE-1").stdout
        assert re.match(r"re-encrypted [1-9]\d* value\(s\)", moved), moved
        # Step 3: the vault writes Transit's KEK config with the team's own token, sent from the tool.
        compose.run(*as_security, "rewrap", "--reason", "CHG-COMPOSE-2")
        compose.run(*as_security, "retire-kek-versions", "--below", latest, "--reason", "CHG-COMPOSE-2")
        status = compose.run(*as_security, "status").stdout
        assert f"KEK min_decryption_version    : v{latest}" in status, status
        result = reveal(compose, state["token"])
        same = result.get("value") == state["value"]
        assert same, f"token no longer reveals its value after KEK and data-key rotation: {result['reveal']}"


AUDIT_LOG = "/vault/logs/audit.log"  # deploy/compose/vault-init.sh's audit device, in the vault-audit volume


def transit_audit_entries(compose: Compose) -> dict[str, str]:
    """OpenBao's audit records of Transit requests: "type request id" -> the request's path (no value: HMAC-ed or
    not read). Read in the vault container as user vault, the file's owner (0600)."""
    out = compose.run("exec", "-T", "--user", "vault", "vault", "cat", AUDIT_LOG).stdout
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {
        f"{entry['type']} {entry['request']['id']}": entry["request"]["path"]
        for entry in entries
        if entry.get("request", {}).get("path", "").startswith("transit/")
    }


def test_after_down_and_up_old_tokens_detokenize_and_a_replay_adds_no_row(compose: Compose) -> None:
    """Walk 49, W49-7: OpenBao's audit trail (Transit decrypts, key changes) was in the vault container's writable
    layer, so the container `up` recreated after a `down` began it afresh; it is in a volume of its own now."""
    assert state, "needs the token revealed by the steps before"
    with compose.step("vault", "vault-init", "vault-service", "etl-service"):
        before = transit_audit_entries(compose)
        assert "transit/keys/tokenvault/rotate" in before.values(), "the step before's KEK rotation is not audited"
        compose.run("down")  # no -v: volumes (Postgres, Vault's raft storage and audit trail, certificates) stay
        seconds = up(compose)
        figure("docker compose up --wait (after down, volumes kept)", f"{seconds:.0f} s")
        result = reveal(compose, state["token"])
        same = result.get("value") == state["value"]
        assert same, f"token no longer reveals its value after down/up: {result['reveal']}"
        after = transit_audit_entries(compose)
        lost = sorted({before[key] for key in before.keys() - after.keys()})
        assert not lost, f"{len(before.keys() - after.keys())} Transit audit records gone after down/up: {lost}"
        assert after.keys() - before.keys(), "no Transit request audited after the up"
        owner_mode = compose.run("exec", "-T", "vault", "stat", "-c", "%U %a", AUDIT_LOG).stdout.split()
        assert owner_mode == ["vault", "600"], owner_mode
        compose.run("run", "--rm", "--no-deps", "load-sample")
        wait_for(lambda: queue_drained(compose), 90, "the replayed events consumed")
        assert counts(compose) == (99, 1)
