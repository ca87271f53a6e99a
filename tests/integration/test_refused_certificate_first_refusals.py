"""Another refused certificate of a name is named in the audit while one of that name loops (attack 46, A46-4).

Refusals of a certificate the vault refuses itself are throttled by the client name it carries (b79d311, A45-5), and
names are roles: every analyst's certificate says CN=analyst. A former analyst's revoked certificate calling in a loop
kept "refused analyst" empty (50, then each item as it came back), so a second revoked analyst certificate - stolen,
another person's - had 20 calls of 20 refused RESOURCE_EXHAUSTED and no audit row named its serial. Now each bucket a
refused certificate takes from keeps its last FIRST_REFUSALS items for the first refusals of each certificate, which
the loop has spent: the second certificate's first refusals are audited with its serial, and both together stay
within the name's one bound (A45-5's). The vault runs in the test's process with its own CRL (the throttle is per
process).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import psycopg
from cryptography import x509

from devstack import certs
from tests.conftest import running_vault
from tests.integration.revocation_lists import authority, crl
from tests.integration.test_refused_certificates_by_name import _bound, _refusal_rows, _reveal
from tokenvault_api.v1 import vault_pb2_grpc
from tokenvault_client import ClientIdentity, open_channel
from vault_service.service.metering import FIRST_REFUSALS

__all__ = ["authority", "crl"]


def test_a_looping_revoked_analyst_certificate_leaves_another_refused_analyst_certificate_named_in_the_audit(
    stack_env: dict[str, str], authority: certs.Authority, crl: Path, tmp_path: Path
) -> None:
    former = certs.issue(authority, tmp_path / "former", "analyst")
    stolen = certs.issue(authority, tmp_path / "stolen", "analyst")
    serials = [x509.load_pem_x509_certificate(c.cert.read_bytes()).serial_number for c in (former, stolen)]
    certs.write_revocation_list(authority, serials, crl)
    with (
        running_vault(stack_env, TOKENVAULT_TLS_CLIENT_CRL=str(crl)) as vault,
        psycopg.connect(stack_env["PG_ADMIN_DSN"], autocommit=True) as admin,
    ):
        (before,) = admin.execute("SELECT coalesce(max(id), 0) FROM vault.audit_log").fetchone()  # type: ignore[misc]
        stop = threading.Event()
        looped: list[grpc.StatusCode] = []

        def keep_calling() -> None:
            identity = ClientIdentity(authority.cert_path, former.cert, former.key, "localhost")
            with open_channel(vault.address, identity) as channel:
                stub = vault_pb2_grpc.TokenVaultStub(channel)
                while not stop.is_set():
                    looped.append(_reveal(stub, "INC-4646"))

        started = time.monotonic()
        thread = threading.Thread(target=keep_calling, daemon=True)
        thread.start()
        time.sleep(1.0)  # the former analyst's burst spent; it takes each item as it comes back
        identity = ClientIdentity(authority.cert_path, stolen.cert, stolen.key, "localhost")
        with open_channel(vault.address, identity) as channel:
            stub = vault_pb2_grpc.TokenVaultStub(channel)
            codes = []
            for _ in range(20):
                codes.append(_reveal(stub, "INC-4647"))
                time.sleep(0.05)
        stop.set()
        thread.join(10)
        elapsed = time.monotonic() - started
        named = _refusal_rows(admin, before, format(serials[1], "x"))
        flooded = _refusal_rows(admin, before, format(serials[0], "x"))
    exhausted = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    bound = _bound(elapsed)
    print(
        f"the other revoked analyst certificate: {len(codes)} calls, {exhausted} RESOURCE_EXHAUSTED, {named} rows"
        f" naming its serial; the looping one: {len(looped)} calls, {flooded} rows; together {named + flooded}"
        f" in {elapsed:.1f} s (the name's bound {bound:.0f})"
    )
    assert len(looped) > 200, len(looped)  # it did loop throughout (its refusals answered at once)
    assert codes[:FIRST_REFUSALS] == [grpc.StatusCode.UNAUTHENTICATED] * FIRST_REFUSALS, codes
    assert named >= FIRST_REFUSALS, (named, codes)
    assert codes.count(grpc.StatusCode.UNAUTHENTICATED) == named  # each refusal written is one answered as such
    assert named + flooded <= bound, (named, flooded, bound)  # still within the name's one bound (A45-5)
