"""The vault service over gRPC (mTLS as identity `etl-service`), implementing Tokenizer.

The vault's quota paces the ETL within a receive: a metered Tokenize (RESOURCE_EXHAUSTED with
`retry-after-ms`) is tried again after the vault's retry-after, by the vault client itself
(`RetryPolicy.max_rate_limit_wait`), for up to MAX_THROTTLED_WAIT_SECONDS in all. A quota is not an
outage (attack 19, finding 2): postponing the batch would make SQS count one more receive toward the
redrive limit each time the vault says "later", although the vault is up; the batch waits instead,
its messages held and their leases kept by the lease keeper. Past that wait, or once the consumer
stops (`stopping`, which ends a wait at once), the refusal goes up as `Throttled` and the batch is
postponed for at least the vault's retry-after (service/batch.py), the gate closed as long.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import grpc

from etl_service.adapters.vault_tls_probe import HANDSHAKE_MARKS, VaultTls, handshake_refusal
from etl_service.errors import DependencyDown, EtlError, Misconfigured, vault_status_error
from tokenvault_client import ChunkLimits, RateLimited, RetryPolicy, TokenType, VaultClient, VaultClientError

log = logging.getLogger(__name__)

MAX_ITEMS_PER_CALL = 5_000
PROBE_IP = "192.0.2.1"
PROBE_DEVICE_ID = "tokenvault-etl-start-up-probe"
MAX_THROTTLED_WAIT_SECONDS = 30.0
"""How long a Tokenize the vault meters waits within its receive, in all, before its batch is postponed instead."""
QUOTA_LOG_SECONDS = 10.0
"""At most one "vault quota reached" line this often (QuotaWaitLog)."""


class GrpcTokenizer:
    """Tokenizes ips and device ids in batched Tokenize calls, through the project's vault client.

    The client knows the channel, deadlines and chunking, and waits out the vault's quota (the
    module's docstring); it retries nothing else (`max_attempts=1`): for an outage, a refusal or
    a bug the ETL decides by the kind of error itself (postpone, stop, isolate; etl_service/errors.py).
    """

    def __init__(
        self,
        channel: grpc.Channel,
        timeout_seconds: float = 10.0,
        stopping: threading.Event | None = None,
        max_throttled_wait: float = MAX_THROTTLED_WAIT_SECONDS,
        tls: VaultTls | None = None,
    ) -> None:
        """`stopping`: the consumer's stop event (bootstrap shares it); once set, a quota wait ends at once.

        `tls`: the address and PEM bytes the channel was opened with, to ask a handshake failure whether the vault
        refuses the ETL's TLS settings (vault_tls_probe; etl50) - else every such failure is the vault down.

        `channel`: one tokenvault_client opened (secure_channel, as bootstrap does): it sends a Tokenize once, so
        a Tokenize that could not connect to the vault (its port closed: the vault down) was never sent and
        stored nothing - its DependencyDown says so (EtlError.nothing_stored), and on a message's last receive
        the letter is a plain `dependency_unavailable` one, not "tokenize outcome unknown" (walk46, W46-4).
        """
        self.stopping = stopping if stopping is not None else threading.Event()
        self._tls = tls
        self._client = VaultClient(
            channel,
            deadline=timeout_seconds,
            retry=RetryPolicy(max_attempts=1, max_rate_limit_wait=max_throttled_wait),
            limits=ChunkLimits(max_items=MAX_ITEMS_PER_CALL),
            sleep=self.stopping.wait,  # True once set: the client raises the refusal it waited out
            on_wait=QuotaWaitLog(),
            tokenize_sent_once=True,  # bootstrap's channel is tokenvault_client's (secure_channel)
        )

    def ready(self) -> None:
        """The vault reports SERVING (grpc.health.v1; it does so only with its database up).

        Misconfigured when the vault refuses the ETL's identity on health too (since its guard checks
        every call: a certificate expired or revoked while the gate was closed), classified as
        Tokenize's refusals are, and when the vault's TLS refuses the ETL (`_refused`, etl50); any other
        failure is DependencyDown (review 20, R20-7: a refused identity read as "vault down" kept the ETL
        paused for ever instead of exiting).
        """
        try:
            self._client.ready(timeout=2)
        except VaultClientError as error:
            kind = self._refused(error, vault_status_error(error.code.name, error.details, "health check"))
            if isinstance(kind, Misconfigured):
                raise kind from None
            raise DependencyDown(f"vault service health check: {error.code.name}", "vault") from None

    def check_access(self) -> None:
        """At start: the TLS handshake, the ETL's identity and its permission to tokenize both types.

        Tokenizes two documentation values (RFC 5737's 192.0.2.1 and a fixed probe id: no
        PII) - the only way to learn the permission without a dedicated RPC. Raises
        Misconfigured for a refusal - a TLS handshake the vault refuses too (`_refused`) -, DependencyDown when
        the vault cannot be reached.
        """
        ip_tokens, device_tokens = self.tokenize([PROBE_IP], [PROBE_DEVICE_ID])
        if PROBE_IP not in ip_tokens or PROBE_DEVICE_ID not in device_tokens:
            raise Misconfigured(
                "the vault refused to tokenize the start-up probe values: the ETL's identity may not tokenize"
                " ip and device_id (config/vault-policy.toml)",
                "vault",
            )

    def tokenize(self, ips: Sequence[str], device_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        """(ip -> token, device_id -> token); refused values are left out and logged by count.

        Sent as value columns (one repeated string per type): no message per value to build
        on this side or to read on the vault's.
        """
        try:
            ip_column, device_column = self._client.tokenize_columns(
                [(TokenType.IP, ips), (TokenType.DEVICE_ID, device_ids)]
            )
        except VaultClientError as error:
            retry_after = error.retry_after if isinstance(error, RateLimited) else 0.0  # its retry-after-ms
            raise self._refused(
                error, vault_status_error(error.code.name, error.details, "Tokenize", retry_after, error.nothing_stored)
            ) from None
        ip_tokens = {value: token for value, token in zip(ips, ip_column.tokens, strict=True) if token}
        device_tokens = {value: token for value, token in zip(device_ids, device_column.tokens, strict=True) if token}
        refused = len(ip_column.errors) + len(device_column.errors)
        if refused:
            log.warning("vault refused values", extra={"refused_count": refused})
        return ip_tokens, device_tokens

    def _refused(self, error: VaultClientError, kind: EtlError) -> EtlError:
        """`kind`, or Misconfigured when it is UNAVAILABLE of a failed handshake and the vault refuses the ETL's TLS.

        gRPC tells a certificate the vault refuses, or a vault certificate ETL_TLS_CA does not verify, from the vault
        down by no status: taken for an outage, the ETL waited for ever once its certificate expired, or the vault's
        CA changed, while it ran (etl50). A handshake of the ETL's own says which (vault_tls_probe).
        """
        lowered = error.details.lower()
        if self._tls is None or error.code.name != "UNAVAILABLE" or not any(m in lowered for m in HANDSHAKE_MARKS):
            return kind
        refused = handshake_refusal(self._tls, stopping=self.stopping)  # its waits end once the ETL stops
        if refused is None:
            return kind
        return Misconfigured(f"vault service refused the ETL's TLS (the TLS handshake failed): {refused}", "vault")


class QuotaWaitLog:
    """The client's on_wait: one log line per `every` seconds, counting the waits since the last one.

    Under this policy only a metered refusal is waited out. A quota the ETL runs into keeps it
    waiting 0.1 s at a time: a line per wait was 600 lines in 4 minutes (attack 20's notes).
    """

    def __init__(self, every: float = QUOTA_LOG_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._every, self._clock = every, clock
        self._lock = threading.Lock()
        self._next_line, self._waits = float("-inf"), 0

    def __call__(self, error: VaultClientError, seconds: float) -> None:
        """Count one wait of `seconds`; log it (with the waits not logged since) when a line is due."""
        with self._lock:
            self._waits += 1
            now = self._clock()
            if now < self._next_line:
                return
            waits, self._waits, self._next_line = self._waits, 0, now + self._every
        log.info("vault quota reached: waiting its retry-after", extra={"retry_after_s": seconds, "waits": waits})
