"""The ETL signs each load batch's row digests; what the officer's check recomputes (attack 41, A41-1).

The signature itself is Transit's (tests/integration/test_a411_login_rows_signed.py, tests/cli/...); here the
bytes both sides compute, the public keys file as Transit writes it, and the batch's handling of a signer that
is down or refuses: no row is ever written unsigned, and a message on its last receive is dead-lettered sealed.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from etl_service.domain.row_manifest import RowManifest, unsigned_manifest
from etl_service.errors import DependencyDown, Misconfigured
from etl_service.service.batch import BatchProcessor
from tests.unit.etl_builders import good, message
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer
from tests.unit.test_batch import EnvelopeSealer
from tokenvault_cli.settings import Settings
from tokenvault_common.login_row_signatures import (
    PublicKeys,
    PublicKeysError,
    digests_of,
    row_digest,
    signed_input,
)

KEY = Ed25519PrivateKey.generate()


def _transit_read(*keys: Ed25519PrivateKey) -> str:
    """What `bao read -format=json transit/keys/tokenvault-login-rows` prints (trimmed to what is read)."""
    public = {
        str(n): {"public_key": base64.b64encode(k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()}
        for n, k in enumerate(keys, start=1)
    }
    return json.dumps({"request_id": "x", "data": {"type": "ed25519", "exportable": False, "keys": public}})


def _sign(key: Ed25519PrivateKey, version: int, data: bytes) -> str:
    return f"vault:v{version}:" + base64.b64encode(key.sign(data)).decode()


class KeySigner:
    """A stand-in for Transit holding the ETL's key (the RowSigner port)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.signed: list[bytes] = []

    def sign_login_rows(self, message: bytes) -> str:
        if self.error is not None:
            raise self.error
        self.signed.append(message)
        return _sign(KEY, 1, message)


class ManifestStore(FakeLoginStore):
    def __init__(self) -> None:
        super().__init__()
        self.manifests: list[object] = []

    def write(self, rows, quarantined, manifest=None):  # type: ignore[no-untyped-def]
        self.manifests.append(manifest)
        return super().write(rows, quarantined, manifest)


def test_a_row_digest_covers_whose_tokens_these_are_and_nothing_is_ambiguous() -> None:
    base = ("e-1", "u-1", "ip_a", "device_id_b", date(2026, 12, 6))
    digest = row_digest(*base)
    assert len(digest) == 32 and digest == row_digest(*base)
    changed = [
        ("e-2", "u-1", "ip_a", "device_id_b", date(2026, 12, 6)),
        ("e-1", "u-2", "ip_a", "device_id_b", date(2026, 12, 6)),
        ("e-1", "u-1", "device_id_b", "ip_a", date(2026, 12, 6)),  # tokens swapped between the columns
        ("e-1", "u-1", "ip_a", "device_id_b", date(2026, 12, 7)),
        ("e-1", "u-1", "ip_a", None, date(2026, 12, 6)),
        ("e-1", "u-1,ip_a", "", "device_id_b", date(2026, 12, 6)),  # a separator moved into a field
    ]
    assert digest not in {row_digest(*c) for c in changed}


def test_the_public_keys_file_verifies_its_versions_signatures_and_nothing_else() -> None:
    other = Ed25519PrivateKey.generate()
    keys = PublicKeys.parse(_transit_read(KEY, other))
    listing = uuid.uuid4()
    digests = row_digest("e", "u", "i", "d", None) * 3
    data = signed_input(listing, digests)
    assert keys.verify(_sign(KEY, 1, data), data) and keys.verify(_sign(other, 2, data), data)
    assert not keys.verify(_sign(KEY, 2, data), data)  # the version names the key
    assert not keys.verify(_sign(KEY, 3, data), data)  # a version the file does not hold
    assert not keys.verify(_sign(KEY, 1, data), signed_input(uuid.uuid4(), digests))  # another list's id
    assert not keys.verify(_sign(KEY, 1, data), signed_input(listing, digests[:32]))  # a digest dropped
    assert not keys.verify("vault:v1:not base64!", data) and not keys.verify("", data)
    assert digests_of(digests + b"x") == {digests[:32]}
    for bad in ("", "[]", '{"data": {"keys": {}}}', '{"keys": {"1": {"public_key": "AAAA"}}}'):
        with pytest.raises(PublicKeysError):
            PublicKeys.parse(bad)


def test_the_batch_signs_its_rows_once_and_the_store_writes_the_list_with_them() -> None:
    queue, store, signer = FakeQueue(), ManifestStore(), KeySigner()
    processor = BatchProcessor(queue, FakeTokenizer(), store, max_receive_count=5, signer=signer)
    outcome = processor.process([message(n, good(n)) for n in range(1, 4)])
    assert outcome.loaded == 3 and len(signer.signed) == 1
    (manifest,) = store.manifests
    assert isinstance(manifest, RowManifest)
    keys = PublicKeys.parse(_transit_read(KEY))
    assert keys.verify(manifest.signature, signed_input(manifest.manifest_id, manifest.digests))
    listed = digests_of(manifest.digests)
    assert all(
        row_digest(r.event_id, r.user_id, r.masked_ip, r.masked_device_id, r.create_date) in listed
        for r in store.rows.values()
    )
    assert unsigned_manifest([])[1] == b""


@pytest.mark.parametrize(
    "error", [DependencyDown("OpenBao unavailable", "openbao"), Misconfigured("no sign", "openbao")], ids=str
)
def test_a_signer_down_or_refusing_writes_no_row_and_the_last_receive_is_dead_lettered_with_a_reason(
    error: Exception,
) -> None:
    queue, store = FakeQueue(), ManifestStore()
    processor = BatchProcessor(
        queue, FakeTokenizer(), store, max_receive_count=3, sealer=EnvelopeSealer(), signer=KeySigner(error)
    )
    outcome = processor.process([message(1, good(1), receive_count=3), message(2, good(2), receive_count=1)])
    assert store.rows == {} and [m for m in store.manifests if m is not None] == []  # nothing loaded unsigned
    assert ("delete", "m2") not in queue.actions  # kept in the queue: postponed or released
    reason = "dependency_unavailable" if isinstance(error, DependencyDown) else "released_on_last_receive"
    assert queue.dead_lettered == [("m1", reason)]  # the last receive: sealed, with a reason
    assert outcome.loaded == 0


def test_a49_3_a_version_the_file_lacks_is_a_stale_file_only_when_a_refresh_could_bring_it() -> None:
    """Newer than the file's newest, on a list signed after the file was read, not in the future (attack 49, A49-3)."""
    read_at = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    now = read_at + timedelta(hours=1)
    keys = replace(PublicKeys.parse(_transit_read(KEY, KEY, KEY)), read_at=read_at)
    after, before = read_at + timedelta(minutes=1), read_at - timedelta(minutes=1)
    assert keys.may_come_with_a_refresh(4, after, now)  # a rotation since the file was read
    assert keys.may_come_with_a_refresh(99, now, now)
    assert not keys.may_come_with_a_refresh(99, before, now)  # the file was read after it: no v99 then
    assert not keys.may_come_with_a_refresh(99, read_at, now)
    assert not keys.may_come_with_a_refresh(99, now + timedelta(seconds=1), now)  # dated ahead of the database
    assert not keys.may_come_with_a_refresh(99, None, now)
    trimmed = replace(PublicKeys({3: KEY.public_key()}), read_at=None)
    assert not trimmed.may_come_with_a_refresh(2, after, now)  # not newer than the newest: never by a refresh
    assert trimmed.may_come_with_a_refresh(4, before, now)  # read when, unknown: as before A49-3
    assert not trimmed.may_come_with_a_refresh(4, now + timedelta(seconds=1), now)  # dated ahead: never (A50-2)


def test_r49_5_a_keys_file_that_does_not_say_when_it_was_read_is_never_dated_by_its_copy(tmp_path: Path) -> None:
    """Review 49, R49-5: a file without read_at (`vault read > file`) handed out after a rotation, its modification
    time that of the copy, called the new version's genuine rows "no refresh brings it"; it is a stale file."""
    keys_file = tmp_path / "login-row-keys.json"
    keys_file.write_text(_transit_read(KEY))
    keys_file.chmod(0o644)
    keys = Settings(login_row_keys=keys_file).row_keys()
    assert keys is not None and keys.read_at is None
    signed = datetime.now(UTC) - timedelta(hours=1)  # a rotation an hour ago; the copy was made just now
    assert keys.may_come_with_a_refresh(2, signed, datetime.now(UTC))


def test_a49_3_the_keys_file_says_when_it_was_read() -> None:
    """`login-row-keys refresh` and the embedded stack write `read_at`; without it, none (its mtime, later)."""
    document = json.loads(_transit_read(KEY))
    assert PublicKeys.parse(json.dumps(document)).read_at is None
    document["read_at"] = "2026-12-06T12:00:00+00:00"
    assert PublicKeys.parse(json.dumps(document)).read_at == datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    document["read_at"] = "2026-12-06T12:00:00"  # no zone: not a time to compare with signed_at
    assert PublicKeys.parse(json.dumps(document)).read_at is None
