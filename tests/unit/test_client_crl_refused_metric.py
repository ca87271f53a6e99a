"""A refused client CRL file is counted and shows on a gauge, so it pages (review 19, R19-4).

The lists are real CRLs signed by the test's CA (the helpers of test_client_crl_ordering).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

from prometheus_client import REGISTRY

from devstack import certs
from tests.unit.test_client_crl_ordering import NOW, Clock, write_crl
from vault_service.adapters.client_crl import RevocationList
from vault_service.adapters.client_crl_lists import REFUSAL_REASONS
from vault_service.entrypoints.metrics import observe_client_crl_refused, watch_client_crl_file_in_force

REFUSED = "tokenvault_client_crl_refused_total"
IN_FORCE = "tokenvault_client_crl_file_in_force"


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value(REFUSED, {"reason": reason}) or 0.0


def watched(path: Path, ca: certs.Authority, clock: Clock) -> RevocationList:
    revocations = RevocationList(path, [ca.cert], recheck_seconds=1, clock=clock, on_refused=observe_client_crl_refused)
    watch_client_crl_file_in_force(revocations.file_in_force)
    return revocations


def test_an_older_list_is_counted_the_gauge_drops_and_a_newer_list_brings_it_back(tmp_path: Path) -> None:
    ca, path, clock = certs.create_authority(tmp_path), tmp_path / "crl.pem", Clock()
    write_crl(ca, path, [0xA], number=5)
    revocations = watched(path, ca, clock)
    assert REGISTRY.get_sample_value(IN_FORCE) == 1.0
    before = refused("not_newer")
    write_crl(ca, path, [], number=4)  # an older list put back
    clock.now += 2
    assert REGISTRY.get_sample_value(IN_FORCE) == 0.0, "the refused file shows as in force"
    assert refused("not_newer") == before + 1
    clock.now += 2
    assert REGISTRY.get_sample_value(IN_FORCE) == 0.0
    assert refused("not_newer") == before + 1, "one refusal per file version, not per look"
    write_crl(ca, path, [0xA, 0xB], published=NOW + datetime.timedelta(seconds=5), number=6)
    clock.now += 2
    assert REGISTRY.get_sample_value(IN_FORCE) == 1.0
    assert revocations.is_revoked("b")
    assert refused("not_newer") == before + 1


def test_each_refusal_is_counted_under_its_reason(tmp_path: Path) -> None:
    ca, other, path, clock = (
        certs.create_authority(tmp_path / "ca"),
        certs.create_authority(tmp_path / "other"),
        tmp_path / "crl.pem",
        Clock(),
    )
    write_crl(ca, path, [0xA], number=5)
    revocations = watched(path, ca, clock)
    cases: list[tuple[str, Callable[[], object]]] = [
        ("not_full_list", lambda: write_crl(ca, path, [0xB], number=7, delta_of=5)),
        ("future", lambda: write_crl(ca, path, [], published=NOW + datetime.timedelta(hours=1), number=8)),
        ("unknown_ca", lambda: write_crl(other, path, [], number=9)),
        ("unreadable", lambda: path.write_bytes(b"-----BEGIN X509 CRL-----\nnot a crl\n")),
    ]
    for reason, write in cases:
        before = refused(reason)
        write()
        clock.now += 2
        assert not revocations.file_in_force()
        assert refused(reason) == before + 1, reason
        assert revocations.is_revoked("a")
    path.unlink()
    path.mkdir()  # not a regular file
    before = refused("unreadable")
    clock.now += 2
    assert REGISTRY.get_sample_value(IN_FORCE) == 0.0
    assert refused("unreadable") == before + 1


def test_every_reason_is_exported_at_zero_before_any_refusal() -> None:
    for reason in REFUSAL_REASONS:
        assert REGISTRY.get_sample_value(REFUSED, {"reason": reason}) is not None, reason
