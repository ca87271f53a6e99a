"""A stop of the ETL ends its vault TLS probe while the vault's name lookup hangs (the probe's stop, fix52).

The probe's waits (connect, handshake, first frame) were sliced to watch the stop event (fix51), but its name lookup
(getaddrinfo) was one blocking call: with a resolver that hangs (an unreachable DNS server) a SIGTERM met the probe
and waited for the resolver's own timeout. Here the resolver is a fake (socket.getaddrinfo replaced) that blocks.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from devstack import certs
from etl_service.adapters.vault_tls_probe import VaultTls, handshake_refusal

REPO = Path(__file__).resolve().parents[2]
RESOLVER_TIMEOUT_SECONDS = 5.0
"""How long the fake resolver hangs before it gives up, as a real one does at its own timeout."""
STOP_WITHIN_SECONDS = 0.5
"""How soon after the stop the probe must have returned (it looks at the stop every 0.25 s)."""


def _vault_tls(directory: Path) -> VaultTls:
    """The ETL's TLS bytes (a throwaway CA and client certificate) for a vault reached by a name."""
    authority = certs.create_authority(directory)
    pair = certs.issue(authority, directory, "etl-service")
    return VaultTls(
        "vault-service:8443", authority.cert_path.read_bytes(), pair.cert.read_bytes(), pair.key.read_bytes()
    )


def test_a_stop_ends_the_probe_while_its_name_lookup_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    released, entered = threading.Event(), threading.Event()
    lookup_threads: list[threading.Thread] = []

    def hanging_resolver(*args: object, **kwargs: object) -> list[object]:
        lookup_threads.append(threading.current_thread())
        entered.set()
        released.wait(RESOLVER_TIMEOUT_SECONDS)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_resolver)
    stop = threading.Event()
    stopped_at: list[float] = []

    def stop_once_looking_up() -> None:
        entered.wait(RESOLVER_TIMEOUT_SECONDS)
        time.sleep(0.1)
        stopped_at.append(time.monotonic())
        stop.set()

    threading.Thread(target=stop_once_looking_up, daemon=True).start()
    try:
        assert handshake_refusal(_vault_tls(tmp_path), stopping=stop) is None  # no diagnosis: an outage
        returned_at = time.monotonic()
    finally:
        released.set()
    assert entered.is_set() and stopped_at, "the probe never looked the vault's name up"
    took = returned_at - stopped_at[0]
    assert took < STOP_WITHIN_SECONDS, f"the probe returned {took:.2f} s after the stop: it waited on the resolver"
    assert all(thread.daemon for thread in lookup_threads), "a lookup left behind would keep the process alive"


def test_a_process_stopped_mid_lookup_exits_though_the_lookup_never_ends(tmp_path: Path) -> None:
    tls = _vault_tls(tmp_path)
    for name, data in (("ca", tls.ca_pem), ("cert", tls.cert_pem), ("key", tls.key_pem)):
        (tmp_path / f"{name}.bin").write_bytes(data)
    script = f"""
import socket, threading, time
from pathlib import Path
from etl_service.adapters.vault_tls_probe import VaultTls, handshake_refusal
socket.getaddrinfo = lambda *args, **kwargs: threading.Event().wait()  # a resolver that never answers
ca, cert, key = (Path({str(tmp_path)!r}, name + ".bin").read_bytes() for name in ("ca", "cert", "key"))
stop = threading.Event()
threading.Timer(0.3, stop.set).start()
print(handshake_refusal(VaultTls("vault-service:8443", ca, cert, key), stopping=stop))
"""
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO,
            env={"PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the process did not exit: its probe (or the lookup's thread) waited on the resolver")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "None"


def test_a_failed_lookup_is_still_an_outage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown_name(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown_name)
    started = time.monotonic()
    assert handshake_refusal(_vault_tls(tmp_path), stopping=threading.Event()) is None
    assert time.monotonic() - started < 1.0
