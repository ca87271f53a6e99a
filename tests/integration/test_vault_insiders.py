"""Insiders against the real vault (issue: every identity can do only its own job).

A vault of this module's own accepts clients of a CA the test controls, so it can mint the
odd certificates an insider holding a CA key would: a CN with a NUL, two CNs, a leaf under an
intermediate. Its policy gives the ETL small quotas, so a dictionary sweep hits them quickly.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import REGISTRY

from devstack.procs import free_port
from devstack.stack import vault_service_env
from tests.conftest import RunningVault, running_vault
from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc

POLICY = """
[defaults.limits]
tokenize_per_second = 100
tokenize_burst = 1000
new_tokens_per_second = 100
new_tokens_burst = 1000
detokenize_per_second = 5
detokenize_burst = 20

[clients.etl-service]
tokenize = ["ip", "device_id"]
[clients.etl-service.limits]
tokenize_per_second = 200000
tokenize_burst = 500000
new_tokens_per_second = 1000
new_tokens_burst = 3000

[clients.analyst.detokenize]
ip = "plain"
device_id = "masked"

[clients.no-limits-given.detokenize]
ip = "plain"
"""


class InsiderCA:
    """A client CA whose key this test holds (as an insider who stole one would)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = self._cert(_name("insider test CA"), self.key, self.key, _name("insider test CA"), ca=True)
        self.path = directory / "client-ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _cert(
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        signer: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        ca: bool,
    ) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    def client(self, subject: x509.Name, via_intermediate: bool = False) -> tuple[bytes, bytes]:
        """(certificate chain PEM, key PEM) for `subject`."""
        key = ec.generate_private_key(ec.SECP256R1())
        signer, issuer, chain = self.key, self.cert.subject, b""
        if via_intermediate:
            inter_key = ec.generate_private_key(ec.SECP256R1())
            inter = self._cert(_name("insider intermediate"), inter_key, self.key, self.cert.subject, ca=True)
            signer, issuer, chain = inter_key, inter.subject, inter.public_bytes(serialization.Encoding.PEM)
        leaf = self._cert(subject, key, signer, issuer, ca=False)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return leaf.public_bytes(serialization.Encoding.PEM) + chain, key_pem


def _name(*common_names: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in common_names])


@pytest.fixture(scope="module")
def insider_ca(tmp_path_factory: pytest.TempPathFactory) -> InsiderCA:
    return InsiderCA(tmp_path_factory.mktemp("insider-ca"))


@pytest.fixture(scope="module")
def guarded(stack_env: dict[str, str], insider_ca: InsiderCA) -> Iterator[RunningVault]:
    policy = insider_ca.directory / "policy.toml"
    policy.write_text(POLICY)
    with running_vault(
        stack_env,
        TOKENVAULT_TLS_CLIENT_CA=str(insider_ca.path),
        TOKENVAULT_POLICY_FILE=str(policy),
        TOKENVAULT_AUDIT_CHECKPOINT_SECONDS="1",
    ) as vault:
        yield vault


def _stub(stack_env: dict[str, str], vault: RunningVault, chain: bytes, key: bytes) -> vault_pb2_grpc.TokenVaultStub:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(stack_env["TLS_CA_CERT"]).read_bytes(), private_key=key, certificate_chain=chain
    )
    channel = grpc.secure_channel(vault.address, credentials, options=[("grpc.ssl_target_name_override", "localhost")])
    return vault_pb2_grpc.TokenVaultStub(channel)


def _as(stack_env: dict[str, str], vault: RunningVault, ca: InsiderCA, *cns: str) -> vault_pb2_grpc.TokenVaultStub:
    return _stub(stack_env, vault, *ca.client(_name(*cns)))


def _detokenize(stub: vault_pb2_grpc.TokenVaultStub, purpose: str = "INC-1") -> vault_pb2.DetokenizeResponse:
    return stub.Detokenize(vault_pb2.DetokenizeRequest(tokens=["ip_" + "I" * 22], purpose=purpose), timeout=10)


def _audit(stack_env: dict[str, str], where: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        return conn.execute(
            f"SELECT client, outcome, client_serial FROM vault.audit_log WHERE {where}", args
        ).fetchall()


@pytest.mark.parametrize(
    "common_names",
    [("analyst\x00evil",), ("analyst", "fraud-investigator"), ("Analyst",), ("analyst\n",), ()],
    ids=["nul-in-cn", "two-cns", "uppercase", "newline", "no-cn"],
)
def test_an_odd_certificate_subject_is_unauthenticated_and_audited(
    stack_env: dict[str, str], guarded: RunningVault, insider_ca: InsiderCA, common_names: tuple[str, ...]
) -> None:
    stub = _as(stack_env, guarded, insider_ca, *common_names)
    started = datetime.datetime.now(datetime.UTC)
    with pytest.raises(grpc.RpcError) as refused:
        _detokenize(stub)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _audit(stack_env, "at >= %s AND outcome = 'refused: Unauthenticated'", started)


def test_a_leaf_under_an_intermediate_is_refused_although_it_chains_to_the_client_ca(
    stack_env: dict[str, str], guarded: RunningVault, insider_ca: InsiderCA
) -> None:
    stub = _stub(stack_env, guarded, *insider_ca.client(_name("analyst"), via_intermediate=True))
    with pytest.raises(grpc.RpcError) as refused:
        _detokenize(stub)
    # Refused in the handshake (the root's pathlen:0) or by the vault's own check: never served.
    assert refused.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE)


def test_a_well_formed_certificate_is_served_and_its_serial_and_fingerprint_are_audited(
    stack_env: dict[str, str], guarded: RunningVault, insider_ca: InsiderCA
) -> None:
    chain, key = insider_ca.client(_name("analyst"))
    leaf = x509.load_pem_x509_certificate(chain)
    _detokenize(_stub(stack_env, guarded, chain, key), purpose="INC-SERIAL")
    serial = format(leaf.serial_number, "x")
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT client, client_serial, client_cert_sha256 FROM vault.audit_log WHERE client_serial = %s", (serial,)
        ).fetchone()
    assert row == ("analyst", serial, leaf.fingerprint(hashes.SHA256()).hex())


def test_a_client_without_limits_in_the_policy_gets_the_default_limit(
    stack_env: dict[str, str], guarded: RunningVault, insider_ca: InsiderCA
) -> None:
    stub = _as(stack_env, guarded, insider_ca, "no-limits-given")
    codes = []
    for _ in range(40):  # default: 5 values/s, bursts of 20
        try:
            _detokenize(stub)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert codes.count(grpc.StatusCode.OK) <= 25


def test_a_dictionary_sweep_hits_the_new_token_quota_is_audited_and_moves_the_alert_metric(
    stack_env: dict[str, str], guarded: RunningVault, insider_ca: InsiderCA
) -> None:
    etl = _as(stack_env, guarded, insider_ca, "etl-service")
    sample = 'tokenvault_tokenize_new_tokens_total{client="etl-service"}'
    before = REGISTRY.get_sample_value("tokenvault_tokenize_new_tokens_total", {"client": "etl-service"}) or 0.0
    started = datetime.datetime.now(datetime.UTC)
    clock = time.monotonic()
    issued, refused = 0, None
    second = 64 + uuid.uuid4().int % 64  # a /16 of 100.64.0.0/10 no other test uses
    for third in range(256):  # sweep it, 256 addresses a call
        values = [f"100.{second}.{third}.{n}" for n in range(256)]
        column = vault_pb2.ValueColumn(type=vault_pb2.TOKEN_TYPE_IP, values=values)
        try:
            etl.Tokenize(vault_pb2.TokenizeRequest(columns=[column]), timeout=10)
            issued += len(values)
        except grpc.RpcError as error:
            refused = error
            break
    assert refused is not None and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{sample}: no quota hit"
    hints = [m.key for m in refused.trailing_metadata() or ()]
    assert "retry-after-ms" in hints
    elapsed = time.monotonic() - clock
    after = REGISTRY.get_sample_value("tokenvault_tokenize_new_tokens_total", {"client": "etl-service"}) or 0.0
    minted = after - before
    assert minted >= issued - 256 * 2  # nearly every swept value was new, and the metric saw them
    assert minted <= 3000 + 1000 * elapsed + 256, f"{minted} new tokens in {elapsed:.1f} s"  # burst + refill
    assert issued < 65_536  # the sweep did not get through
    deadline = time.monotonic() + 10  # aggregated tokenize audit row, written by the upkeep thread
    while not _audit(stack_env, "at >= %s AND client = 'etl-service' AND action = 'tokenize'", started):
        assert time.monotonic() < deadline, "the sweep left no audit row"
        time.sleep(0.3)
    assert _audit(stack_env, "at >= %s AND client = 'etl-service' AND outcome = 'refused: RateLimited'", started)
    # And the ETL's own database role cannot read the tokens it would match the sweep against.
    with psycopg.connect(stack_env["PG_ETL_DSN"]) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT masked_ip FROM public.user_logins LIMIT 1")


def test_probes_refused_new_tokens_move_the_sweep_alert_s_counter_and_are_not_told_how_many_values_are_new(
    stack_env: dict[str, str], guarded: RunningVault, insider_ca: InsiderCA
) -> None:
    """Attack 23, F2: junk over the new-token burst plus guesses, refused, minted nothing and told the count."""
    etl = _as(stack_env, guarded, insider_ca, "etl-service")
    prefix = f"2001:db8:{uuid.uuid4().int % 65536:x}"  # documentation addresses no other test or run uses
    known = [f"{prefix}:1::{n:x}" for n in range(200)]
    deadline = time.monotonic() + 10
    while True:  # stored first (the sweep test may have left the bucket empty: it refills at 1000/s)
        try:
            etl.Tokenize(vault_pb2.TokenizeRequest(columns=[_ip_column(known)]), timeout=10)
            break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline, error
            time.sleep(0.2)
    counter = ("tokenvault_tokenize_new_tokens_refused_total", {"client": "etl-service"})
    before = REGISTRY.get_sample_value(*counter) or 0.0
    guesses = [f"{prefix}:2::{n:x}" for n in range(3001)]  # over the burst of 3000 new tokens: refused whatever is left
    with pytest.raises(grpc.RpcError) as refused:
        etl.Tokenize(vault_pb2.TokenizeRequest(columns=[_ip_column(known + guesses)]), timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (REGISTRY.get_sample_value(*counter) or 0.0) - before == 3001  # where TokenizeSweepSuspected looks
    details = refused.value.details() or ""
    assert "this call of 3201 values" in details and "3001" not in details, details  # its size, not how many are new
    hints = {m.key: str(m.value) for m in refused.value.trailing_metadata() or ()}
    assert hints.get("retry-after-ms") == "3000"  # the burst's refill from empty, not the new values' 3001 ms


def _ip_column(values: list[str]) -> vault_pb2.ValueColumn:
    return vault_pb2.ValueColumn(type=vault_pb2.TOKEN_TYPE_IP, values=values)


def test_a_body_that_is_not_utf_8_is_invalid_argument_and_audited(
    stack_env: dict[str, str], guarded: RunningVault, insider_ca: InsiderCA
) -> None:
    chain, key = insider_ca.client(_name("analyst"))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(stack_env["TLS_CA_CERT"]).read_bytes(), private_key=key, certificate_chain=chain
    )
    channel = grpc.secure_channel(
        guarded.address, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )
    raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/tokenvault.v1.TokenVault/Detokenize")
    started = datetime.datetime.now(datetime.UTC)
    with pytest.raises(grpc.RpcError) as refused:
        raw(b"\x0a\x02\xff\xfe\x12\x05INC-8", timeout=10)  # tokens = [b"\xff\xfe"], purpose = "INC-8"
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _audit(stack_env, "at >= %s AND client = 'analyst' AND outcome = 'refused: InvalidRequest'", started)


def test_refusals_from_one_peer_are_throttled_so_they_cannot_flood_the_audit_log(
    stack_env: dict[str, str], guarded: RunningVault, insider_ca: InsiderCA
) -> None:
    stranger = _as(stack_env, guarded, insider_ca, "stranger")  # CA-signed, not in the policy
    started = datetime.datetime.now(datetime.UTC)
    codes = []
    for _ in range(300):
        try:
            _detokenize(stranger)
        except grpc.RpcError as error:
            codes.append(error.code())
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    written = _audit(stack_env, "at >= %s AND client = 'stranger' AND outcome LIKE 'refused: Unauth%%'", started)
    assert 0 < len(written) <= 60
    deadline = time.monotonic() + 10
    # the count's row names the certificates it counted after it (attack 46, A46-4): "...throttled; certificates ..."
    counted = "outcome LIKE '%%more refusals, throttled; certificates (serial): %%'"
    while not _audit(stack_env, f"at >= %s AND client = 'stranger' AND {counted}", started):
        assert time.monotonic() < deadline, "throttled refusals were not counted in the log"
        time.sleep(0.3)


def _memory_mb(pid: int, field: str) -> float:
    """A /proc/<pid>/status figure in MB: VmRSS (now) or VmHWM (the most the process ever held)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


QUEUE_HOLD_SECONDS = 1.5
"""How long the oversize calls wait in the queue, unread, behind a call that holds the only worker."""


def test_twelve_concurrent_oversize_calls_leave_the_service_small(stack_env: dict[str, str]) -> None:
    """Twelve 60 MB calls on one connection, queued while the service's one worker waits for a silent call.

    What a loaded machine does by chance (workers reach the calls late) is made certain here: no
    worker reads the calls' requests for QUEUE_HOLD_SECONDS, and meanwhile the client sends what
    the service's flow control lets it. The peak (VmHWM, which no sampling can miss) must stay far
    below one such message: before `RECEIVE_WINDOW_OPTIONS`, gRPC's bandwidth-delay probing widened
    the windows of calls nobody read and this peak was 300-700 MB above the start.
    """
    address = f"127.0.0.1:{free_port()}"
    env = {
        **vault_service_env(stack_env),
        "TOKENVAULT_GRPC_ADDRESS": address,
        "TOKENVAULT_METRICS_PORT": "0",
        "TOKENVAULT_WORKERS": "1",
    }
    service = subprocess.Popen([sys.executable, "-m", "vault_service"], env={**env, "PATH": "/usr/bin:/bin"})
    held = threading.Event()
    try:
        channel = grpc.secure_channel(
            address,
            grpc.ssl_channel_credentials(
                Path(stack_env["TLS_CA_CERT"]).read_bytes(),
                Path(stack_env["ANALYST_TLS_KEY"]).read_bytes(),
                Path(stack_env["ANALYST_TLS_CERT"]).read_bytes(),
            ),
            options=[("grpc.ssl_target_name_override", "localhost"), ("grpc.max_send_message_length", -1)],
        )
        grpc.channel_ready_future(channel).result(timeout=30)
        method = "/tokenvault.v1.TokenVault/Detokenize"
        raw: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
        body = b"\x0a\x80\x80\x80\x1e" + b"x" * (60 * 1024 * 1024)  # one 60 MB token
        before = _memory_mb(service.pid, "VmRSS")

        def never_sends() -> Iterator[bytes]:
            held.wait(QUEUE_HOLD_SECONDS)
            yield from ()

        silent_call: grpc.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(method)
        silent = silent_call.future(never_sends(), timeout=30)
        time.sleep(0.3)  # the worker takes the silent call (the first on the connection) and waits for it

        def push(_: int) -> grpc.StatusCode:
            try:
                raw(body, timeout=60)
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(push, range(12)))
        assert silent.exception() is not None
        assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        peak = _memory_mb(service.pid, "VmHWM")
        assert peak - before < 48, f"vault service RSS {before:.0f} MB, peak {peak:.0f} MB"
        channel.close()
    finally:
        held.set()
        service.terminate()
        service.wait(30)


def test_a_call_over_the_item_limit_is_invalid_argument_and_audited(
    stack_env: dict[str, str], guarded: RunningVault, insider_ca: InsiderCA
) -> None:
    stub = _as(stack_env, guarded, insider_ca, "analyst")
    started = datetime.datetime.now(datetime.UTC)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Detokenize(vault_pb2.DetokenizeRequest(tokens=["ip_" + "J" * 22] * 10_001, purpose="INC-9"), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 10000" in (refused.value.details() or "")
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT client, item_count, outcome FROM vault.audit_log WHERE at >= %s AND item_count = 10001", (started,)
        ).fetchone()
    assert row == ("analyst", 10_001, "refused: InvalidRequest")
