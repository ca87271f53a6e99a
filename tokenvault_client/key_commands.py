"""The security team's short key commands the vault runs for its certificate (tokenvault.v1.KeyJobs' unary calls).

`status` changes nothing and has the client's deadline. A change (rewrap, a rotation, retiring KEK
versions) has none: the vault finishes it once started whether or not the caller still waits, so a
deadline would only hide its outcome; ending the call does not undo it (its audit rows say what
was done). None is retried: a rotation sent twice makes two keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from tokenvault_api.v1 import key_jobs_pb2, key_jobs_pb2_grpc
from tokenvault_client.errors import VaultClientError

T = TypeVar("T")


@dataclass(frozen=True)
class DataKeyInfo:
    """One data key as stored: its id, purpose, state and the KEK version wrapping it."""

    key_id: int
    purpose: str
    state: str
    kek_version: int

    def unwraps_under(self, min_decryption_version: int) -> bool:
        """Whether Transit still decrypts the KEK version wrapping this key."""
        return self.kek_version >= min_decryption_version


@dataclass(frozen=True)
class InterruptedKeyJob:
    """A key operation whose process ended between its intent row and its outcome (no live process holds it)."""

    intent_row: int
    job: str
    started_by: str
    client_serial: str
    started_at: str
    reason: str

    def describe(self) -> str:
        """`reencrypt started by 'security-team' (serial 1a) at 2026-12-05T13:10:04+00:00 under CHG-1 (row 42)`."""
        serial = f" (serial {self.client_serial})" if self.client_serial else ""
        return (
            f"{self.job} started by {self.started_by!r}{serial} at {self.started_at} under {self.reason}"
            f" (audit row {self.intent_row})"
        )


@dataclass(frozen=True)
class UnpairedKeyJobOutcome:
    """An outcome row of a key operation naming an intent row it cannot pair with: forged, or a duplicate."""

    outcome_row: int
    job: str
    written_as: str
    client_serial: str
    written_at: str
    reason: str
    names_intent_row: int
    paired_by_row: int

    def describe(self) -> str:
        """`rewrap outcome row 57 as 'security-team' (serial 1a) at ... under CHG-1 names intent row 42, ...`."""
        serial = f" (serial {self.client_serial})" if self.client_serial else ""
        why = (
            f"which outcome row {self.paired_by_row} paired with already (a duplicate)"
            if self.paired_by_row
            else "which is no earlier intent row of that job"
        )
        return (
            f"{self.job} outcome row {self.outcome_row} as {self.written_as!r}{serial} at {self.written_at} under"
            f" {self.reason} names intent row {self.names_intent_row}, {why}"
        )


@dataclass(frozen=True)
class KeyStatus:
    """Where key rotation stands, as the vault reports it."""

    keys: list[DataKeyInfo]
    kek_latest_version: int
    kek_min_decryption_version: int
    kek_min_encryption_version: int
    rows_to_reencrypt: int
    rows_to_reindex: int
    safe_min_decryption_version: int
    interrupted: tuple[InterruptedKeyJob, ...] = ()
    """Key operations whose process ended mid-way (SIGKILL, OOM, node loss): the next one appends their outcome row."""
    unpaired_outcomes: tuple[UnpairedKeyJobOutcome, ...] = ()
    """Outcome rows naming an intent row they cannot pair with: the vault writes one per intent row (forged, or twice)
    (review 33, R33-5)."""
    rows_to_compact: int = 0
    """Fingerprints not under the newest fingerprint key yet; `rows_to_reindex` counts, while a key is pending, those
    still without a next fingerprint under it (chaos 50, V50-5)."""


@dataclass(frozen=True)
class KekVersionsRetired:
    """What retire-kek-versions did: KEK `kek_name`'s versions below `below` no longer decrypt."""

    kek_name: str
    below: int
    outcome: str


class KeyCommands:
    """The short key commands on one channel; each refusal or failure raised as a typed error."""

    def __init__(
        self, channel: grpc.Channel, deadline: float | None, typed: Callable[[grpc.RpcError], VaultClientError]
    ) -> None:
        self._stub = key_jobs_pb2_grpc.KeyJobsStub(channel)
        self._deadline = deadline
        self._typed = typed

    def status(self) -> KeyStatus:
        """The data keys, the KEK's versions, the work left and the safe min_decryption_version."""
        reply = self._once(self._stub.Status, key_jobs_pb2.KeyStatusRequest(), self._deadline)
        return KeyStatus(
            [DataKeyInfo(k.key_id, k.purpose, k.state, k.kek_version) for k in reply.keys],
            reply.kek_latest_version,
            reply.kek_min_decryption_version,
            reply.kek_min_encryption_version,
            reply.rows_to_reencrypt,
            reply.rows_to_reindex,
            reply.safe_min_decryption_version,
            tuple(
                InterruptedKeyJob(j.intent_row, j.job, j.started_by, j.client_serial, j.started_at, j.reason)
                for j in reply.interrupted
            ),
            tuple(
                UnpairedKeyJobOutcome(
                    u.outcome_row,
                    u.job,
                    u.written_as,
                    u.client_serial,
                    u.written_at,
                    u.reason,
                    u.names_intent_row,
                    u.paired_by_row,
                )
                for u in reply.unpaired_outcomes
            ),
            reply.rows_to_compact,
        )

    def rewrap(self, reason: str) -> int:
        """Have the vault rewrap every live data key under the KEK's newest version; how many it rewrapped."""
        reply = self._once(self._stub.Rewrap, key_jobs_pb2.KeyChangeRequest(reason=reason))
        return reply.keys_rewrapped

    def rotate_encryption_key(self, reason: str) -> int:
        """Have the vault make a new data-encryption key active; its id."""
        return self._once(self._stub.RotateEncryptionKey, key_jobs_pb2.KeyChangeRequest(reason=reason)).key_id

    def rotate_fingerprint_key(self, reason: str) -> int:
        """Have the vault make a new fingerprint key pending; its id."""
        return self._once(self._stub.RotateFingerprintKey, key_jobs_pb2.KeyChangeRequest(reason=reason)).key_id

    def retire_kek_versions(self, below: int, reason: str, vault_token: str) -> KekVersionsRetired:
        """Have the vault retire the KEK versions below `below`, writing Transit with your own `vault_token`.

        The token goes to the vault for this call only (over the channel's TLS): it looks the token up and
        writes the KEK's config with it after its own checks.
        """
        request = key_jobs_pb2.RetireKekVersionsRequest(below=below, reason=reason, vault_token=vault_token)
        reply = self._once(self._stub.RetireKekVersions, request)
        return KekVersionsRetired(reply.kek_name, reply.below, reply.outcome)

    def _once(self, method: Callable[..., T], request: object, deadline: float | None = None) -> T:
        try:
            return method(request, timeout=deadline)
        except grpc.RpcError as error:
            raise self._typed(error) from None
