"""The client CRL's next update, exported so a list about to expire pages before new pods fail (attack 18, f. 2)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from prometheus_client import REGISTRY

from devstack import certs
from vault_service.adapters.client_crl import RevocationList
from vault_service.entrypoints.metrics import watch_client_crl_next_update

METRIC = "tokenvault_client_crl_next_update_timestamp_seconds"


def _write(ca: certs.Authority, path: Path, number: int, next_update: datetime.datetime) -> None:
    published = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(published)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    existed = path.exists()
    previous = path.stat().st_mtime_ns if existed else 0
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    if existed:
        os.utime(path, ns=(previous + 1_000_000_000,) * 2)


def test_the_gauge_tells_when_the_crl_in_force_expires_and_follows_a_new_list_without_calls(tmp_path: Path) -> None:
    ca, path = certs.create_authority(tmp_path), tmp_path / "crl.pem"
    soon = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(hours=3)
    _write(ca, path, 1, soon)
    clock = [0.0]
    revocations = RevocationList(path, [ca.cert], recheck_seconds=1, clock=lambda: clock[0])
    watch_client_crl_next_update(revocations.next_update_timestamp)
    assert REGISTRY.get_sample_value(METRIC) == soon.timestamp()
    later = soon + datetime.timedelta(hours=72)
    _write(ca, path, 2, later)  # the CA rebuilt its list; no call came since
    clock[0] = 2.0
    assert REGISTRY.get_sample_value(METRIC) == later.timestamp()
