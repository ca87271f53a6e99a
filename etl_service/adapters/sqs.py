"""SQS through boto3: receive, batch delete (checking `Failed`), dead-letter, visibility."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
import botocore.config

from etl_service.adapters.crash_loop_letters import CrashLoopLetters
from etl_service.adapters.dead_letter_queue import LISTING_LEASE_SECONDS, LISTING_LIMIT, DeadLetterQueue
from etl_service.adapters.sqs_common import (
    EVENT_ID_ATTRIBUTE,
    SENT_TIMESTAMP_ATTRIBUTE,
    SQS_ERRORS,
    QueueConfigurationError,
    approximate_counts,
    check_queue_pair,
    claimed_sent_ms,
    configuration_problem,
    raise_for,
    redrive_limit_of,
    timestamp_ms,
)
from etl_service.adapters.sqs_resent_times import believed_sent_times, claims_a_checkable_time, string_attribute
from etl_service.adapters.take_back_times import TakeBackTagger
from etl_service.domain.messages import DEAD_LETTER_ATTRIBUTES, QueueMessage, check_event_id
from etl_service.domain.redelivery import retry_delay
from etl_service.domain.resent_times import RESENT_FROM_ATTRIBUTE, SENT_TIME_TAG_ATTRIBUTE, ResentTimeVerifier
from etl_service.errors import DependencyDown
from etl_service.service.own_dead_letters import CiphertextProver
from etl_service.service.ports import BodySealer, QueueDepth, TakeBack

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger(__name__)

REDRIVE_LIMIT_READ_SECONDS = 1.0
"""How often at most SqsQueue.redrive_limit asks SQS for the source queue's redrive policy (failure paths only)."""


def endpoint_for_queue(queue_url: str) -> str | None:
    """The endpoint a non-AWS queue URL implies; None for AWS queue URLs.

    LocalStack's `http://localhost:4566/000000000000/login-queue` -> `http://localhost:4566`.
    """
    parts = urlsplit(queue_url)
    if not parts.scheme or not parts.netloc or parts.hostname is None or parts.hostname.endswith(".amazonaws.com"):
        return None
    return f"{parts.scheme}://{parts.netloc}"


def make_sqs_client(
    endpoint_url: str | None, region: str, access_key_id: str | None = None, secret_access_key: str | None = None
) -> SQSClient:
    """A boto3 SQS client with bounded timeouts and adaptive retries.

    Credentials given here win; otherwise boto3's usual chain applies (env, profile, IAM role).
    """
    config = botocore.config.Config(
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": 3, "mode": "adaptive"},
        max_pool_connections=32,
    )
    client: SQSClient = boto3.client(
        "sqs",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=config,
    )
    return client


def _to_message(raw: Any, believed: Mapping[str, int] | None = None) -> QueueMessage:
    """The QueueMessage of one received message; never raises on attribute values (any sender sets them).

    `believed`: message id -> original sent time, for the re-sent messages whose claimed time was
    authenticated (sqs_resent_times.believed_sent_times); every other message is dated by SQS.
    """
    attributes = raw.get("Attributes") or {}
    message_attributes = raw.get("MessageAttributes") or {}
    event_id, problem = check_event_id(string_attribute(message_attributes, EVENT_ID_ATTRIBUTE))
    sqs_sent = timestamp_ms(attributes.get("SentTimestamp")) or int(time.time() * 1000)
    sent = (believed or {}).get(raw["MessageId"]) or sqs_sent
    receive_count = attributes.get("ApproximateReceiveCount")
    return QueueMessage(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        body=raw.get("Body", ""),
        sent_timestamp_ms=sent,
        receive_count=int(receive_count) if isinstance(receive_count, str) and receive_count.isdecimal() else 1,
        event_id=event_id,
        event_id_problem=problem,
        dead_letter_attributes=_dead_letter_attributes(message_attributes, sqs_sent),
    )


def _dead_letter_attributes(message_attributes: Any, sent_ms: int) -> tuple[tuple[str, str], ...]:
    """The ETL's own dead-letter attributes a message carries (a dead letter moved back as it was).

    The original's sent time is kept only when believable, as a re-sent one is (claimed_sent_ms).
    """
    found = []
    for name in DEAD_LETTER_ATTRIBUTES:
        text = string_attribute(message_attributes, name)
        if name == "source_sent_timestamp" and text is not None:
            text = str(ms) if (ms := claimed_sent_ms(text, sent_ms)) else None
        if text is not None:
            found.append((name, text))
    return tuple(found)


class SqsQueue:
    """Implements the Queue port over one source queue and its DLQ."""

    def __init__(
        self,
        client: SQSClient,
        queue_url: str,
        dlq_url: str,
        visibility_seconds: int = 60,
        prover: CiphertextProver | None = None,
        verifier: ResentTimeVerifier | None = None,
        sealer: BodySealer | None = None,
        take_back_tagger: TakeBackTagger | None = None,
    ) -> None:
        """`prover`: what proves a sealed dead letter the ETL's own in a take-back (a TransitSealer), None without.

        `verifier`: what checks the tag of a re-sent message's original sent time (a TransitSealer);
        without one, every message is dated by SQS's own SentTimestamp.
        `sealer`: the ETL's dead-letter sealer; a take-back seals with it a message the redrive moved
        again after a take-back (a crash loop: crash_loop_letters), None to send every one back.
        `take_back_tagger`: the ETL's tag of a taken-back message's SentTimestamp (TransitSealer.tag_take_back_times),
        None to send originals back untagged (they then load under the take-back's date).
        """
        self._take_back_tagger = take_back_tagger
        self._sealer = sealer
        self._client = client
        self._prover = prover
        self._verifier = verifier
        self._queue_url = queue_url
        self._dlq_url = dlq_url
        self._visibility_seconds = visibility_seconds
        self.max_receive_count: int | None = None
        """The source queue's redrive limit as last read (check(), redrive_limit()); None without a redrive policy."""
        self._limit_read_at = float("-inf")
        self._limit_lock = threading.Lock()

    @property
    def dead_letter_listing_lease_seconds(self) -> int:
        """The lease of take_back_redriven's DLQ listing: the very constant DeadLetterQueue.list holds letters for."""
        return LISTING_LEASE_SECONDS

    def check(self) -> None:
        """Fail fast at start, before any receive: QueueConfigurationError naming the settings.

        Both queues must exist and be reachable, and the DLQ must be the source's own
        dead-letter queue by QueueArn (sqs_common.check_queue_pair: not the source, the target of
        the source's redrive policy, which it must have, and without a redrive policy of its own).
        Also reads the source queue's redrive limit (`max_receive_count`).
        """
        self.max_receive_count = check_queue_pair(self._client, self._queue_url, self._dlq_url).max_receive_count
        self._limit_read_at = time.monotonic()

    def redrive_limit(self) -> int | None:
        """The source queue's redrive limit now: read again at most every REDRIVE_LIMIT_READ_SECONDS.

        Asked only where a message's fate depends on it (a batch failing, a release, a re-sent time
        OpenBao cannot check), so that a redrive policy lowered while the ETL runs counts at once: read once at
        start, a message on its real last receive was taken for one with receives left and postponed, and SQS's
        next receive moved it to the DLQ in clear, with no reason (attack 44's note on b696ca0: its lost-answer
        retry never ran either). SQS failing to answer: the limit last read (logged).
        """
        with self._limit_lock:
            now = time.monotonic()
            if now < self._limit_read_at + REDRIVE_LIMIT_READ_SECONDS:
                return self.max_receive_count
            self._limit_read_at = now
        try:
            attributes = self._client.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=["RedrivePolicy"])
        except SQS_ERRORS as error:
            log.warning(
                "redrive limit not read again: the last one read applies", extra={"error": type(error).__name__}
            )
            return self.max_receive_count
        limit = redrive_limit_of(attributes.get("Attributes", {}).get("RedrivePolicy", ""))
        if limit != self.max_receive_count:
            log.warning("the source queue's redrive limit changed", extra={"was": self.max_receive_count, "now": limit})
            self.max_receive_count = limit
        return limit

    def receive(self, max_messages: int, wait_seconds: int) -> list[QueueMessage]:
        """Long-poll for up to `max_messages` (1-10), leased for the configured visibility."""
        try:
            response = self._client.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=wait_seconds,
                VisibilityTimeout=self._visibility_seconds,
                MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
                MessageAttributeNames=[
                    EVENT_ID_ATTRIBUTE,
                    SENT_TIMESTAMP_ATTRIBUTE,
                    SENT_TIME_TAG_ATTRIBUTE,
                    RESENT_FROM_ATTRIBUTE,
                    *DEAD_LETTER_ATTRIBUTES,
                ],
            )
        except SQS_ERRORS as error:
            raise_for(error, "receive")
        raws = response.get("Messages", [])
        try:
            believed = believed_sent_times(raws, self._verifier)
        except DependencyDown as error:
            raws, believed = self._without_openbao(raws, error), {}
        return [_to_message(m, believed) for m in raws]

    def _without_openbao(self, raws: list[Any], error: DependencyDown) -> list[Any]:
        """The messages of a receive to go on with while OpenBao cannot check claimed re-sent times.

        A message whose claim Transit would have to check waits: postponed with a visibility growing
        with its receive count (from the configured one, doubling, up to 15 minutes), so an outage
        spends its receives slowly; on its last receive (`max_receive_count`) it goes on dated by
        SQS's own SentTimestamp, with a warning naming it - a wrong date beats SQS's redrive moving
        it to the DLQ in clear (review 20, R20-11). Every other message goes on; a claim that is
        not well formed needs no Transit and is ignored as always.
        """
        waiting = [m for m in raws if claims_a_checkable_time(m)]
        if not waiting:
            return raws
        messages = {m["MessageId"]: _to_message(m) for m in waiting}
        last = [
            m for m in waiting if (limit := self.redrive_limit()) and messages[m["MessageId"]].receive_count >= limit
        ]
        for raw in last:
            log.warning(
                "OpenBao cannot check a re-sent time on the message's last receive; SQS's SentTimestamp applies",
                extra={"message_id": raw["MessageId"]},
            )
        postponed = [messages[m["MessageId"]] for m in waiting if m not in last]
        for count in sorted({m.receive_count for m in postponed}):
            seconds = max(self._visibility_seconds, retry_delay(count, base_seconds=self._visibility_seconds))
            self.change_visibility([m for m in postponed if m.receive_count == count], seconds)
        if postponed:
            log.warning("re-sent messages wait for OpenBao: %s", error, extra={"messages": len(postponed)})
        return [m for m in raws if m not in waiting or m in last]

    def delete(self, messages: Sequence[QueueMessage]) -> list[QueueMessage]:
        """Batch delete in groups of 10; return those SQS reported as failed.

        QueueConfigurationError when SQS refuses the call itself for the configuration (the identity may not
        delete, the queue is gone): taken for a passing failure, every loaded batch was left in the queue,
        received and deleted in vain again until SQS's redrive moved it to the DLQ (chaos 49, C49-7).
        """
        failed: list[QueueMessage] = []
        for start in range(0, len(messages), 10):
            chunk = {str(i): m for i, m in enumerate(messages[start : start + 10])}
            try:
                response = self._client.delete_message_batch(
                    QueueUrl=self._queue_url,
                    Entries=[{"Id": k, "ReceiptHandle": m.receipt_handle} for k, m in chunk.items()],
                )
            except SQS_ERRORS as error:
                if problem := configuration_problem(error, "delete"):
                    raise QueueConfigurationError(problem) from None
                log.warning("delete batch failed: %s", type(error).__name__)
                failed.extend(chunk.values())
                continue
            for entry in response.get("Failed", []):
                log.warning(
                    "delete refused",
                    extra={"message_id": chunk[entry["Id"]].message_id, "code": entry.get("Code")},
                )
                failed.append(chunk[entry["Id"]])
        return failed

    def dead_letter(self, message: QueueMessage, reason: str, detail: str, body: str) -> None:
        """Send `body` (the sealed envelope) to the DLQ with reason, detail and origin as attributes."""
        attributes: dict[str, Any] = {
            "reason": {"DataType": "String", "StringValue": reason},
            "reason_detail": {"DataType": "String", "StringValue": detail[:1000]},
            "source_message_id": {"DataType": "String", "StringValue": message.message_id},
            "source_sent_timestamp": {"DataType": "Number", "StringValue": str(message.sent_timestamp_ms)},
        }
        if message.event_id:
            attributes[EVENT_ID_ATTRIBUTE] = {"DataType": "String", "StringValue": message.event_id}
        try:
            self._client.send_message(
                QueueUrl=self._dlq_url,
                MessageBody=body,
                MessageAttributes=attributes,
            )
        except SQS_ERRORS as error:
            raise_for(error, "send to DLQ")

    def change_visibility(self, messages: Sequence[QueueMessage], seconds: int) -> list[QueueMessage]:
        """Set each message's visibility to `seconds` from now, 10 per call; return those that failed."""
        failed: list[QueueMessage] = []
        for start in range(0, len(messages), 10):
            chunk = {str(i): m for i, m in enumerate(messages[start : start + 10])}
            try:
                response = self._client.change_message_visibility_batch(
                    QueueUrl=self._queue_url,
                    Entries=[
                        {"Id": k, "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds}
                        for k, m in chunk.items()
                    ],
                )
            except SQS_ERRORS as error:
                log.warning("visibility change failed (the current lease applies): %s", type(error).__name__)
                failed.extend(chunk.values())
                continue
            failed.extend(chunk[entry["Id"]] for entry in response.get("Failed", []))
        return failed

    def depth(self) -> QueueDepth:
        """Approximate visible, in-flight and delayed counts of the source queue."""
        return approximate_counts(self._client, self._queue_url, "get attributes")

    def take_back_redriven(self, limit: int = LISTING_LIMIT) -> TakeBack:
        """Move DLQ messages SQS's redrive policy moved there back to the source queue.

        Those without a reason, and those whose body is no dead letter of the ETL's, a `reason`
        attribute notwithstanding; a sealed envelope is the ETL's once the prover proves it (one
        rewrap per 250 claims of the listing), without a prover by its shape alone
        (service/own_dead_letters.py). One the redrive moved again after a take-back is sealed and
        kept in the DLQ as `crash_loop` instead (crash_loop_letters). Each goes back with the time
        and tag it carries, else SQS's SentTimestamp of the DLQ copy tagged with the ETL's take-back
        key (take_back_times), so it loads under its own date. The operators' `dead-letters
        redrive` does the same without a prover and without a sealer (DeadLetterQueue.take_back_redriven);
        `complete` is False when the listing could not read the whole DLQ.
        """
        dlq = DeadLetterQueue(self._client, self._queue_url, self._dlq_url)
        crash_loops = CrashLoopLetters(self._client, self._dlq_url, self._sealer) if self._sealer else None
        return dlq.take_back_redriven(limit, self._prover, crash_loops, self._take_back_tagger)

    def dead_letters_held(self) -> int:
        """Approximate in-flight and delayed counts of the DLQ (one GetQueueAttributes call)."""
        counts = approximate_counts(self._client, self._dlq_url, "get DLQ attributes")
        return counts.in_flight + counts.delayed
