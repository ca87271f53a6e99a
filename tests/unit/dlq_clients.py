"""SQS clients playing a dead-letter queue larger than one listing, for the listing and drain tests.

`LargeDlq` serves letters with a reason, then one without, 10 per receive, on a fake clock: a
take-back reaching its limit, or a listing outlasting its lease, can be played without 10,000
letters on a real queue.
"""

from __future__ import annotations

from typing import Any

from etl_service.service.sealing import NOT_KEPT_TOO_LARGE, dead_letter_body

SOURCE, DLQ = "https://sqs.example/1/login-queue", "https://sqs.example/1/login-queue-dlq"
"""The source queue's URL and its DLQ's."""


class LargeDlq:
    """An SQS client serving `reasoned` letters with a reason, then one without, 10 per receive.

    Each receive advances `clock` by `seconds_per_receive`; a letter received is leased for the
    receive's VisibilityTimeout and served again once that runs out (as SQS does).
    """

    def __init__(self, reasoned: int, seconds_per_receive: float = 0.0) -> None:
        self.letters = [_letter(f"reasoned-{i}", reason="not_json") for i in range(reasoned)]
        self.letters.append(_letter("redriven-last", reason=None))
        self.visible_at = {m["MessageId"]: 0.0 for m in self.letters}
        self.now = 0.0
        self.seconds_per_receive = seconds_per_receive
        self.receives = 0
        self.sent: list[str] = []

    def clock(self) -> float:
        return self.now

    def add_original(self, message_id: str, body: str, reason: str | None) -> None:
        """An original SQS's redrive moved as it was (its body in clear), with its producer's `reason` if given."""
        attributes = {"event_id": {"DataType": "String", "StringValue": f"evt-{message_id}"}}
        if reason:
            attributes["reason"] = {"DataType": "String", "StringValue": reason}
        self.letters.append(
            {"MessageId": message_id, "ReceiptHandle": f"h-{message_id}", "Body": body, "MessageAttributes": attributes}
        )
        self.visible_at[message_id] = 0.0

    def receive_message(self, QueueUrl: str, VisibilityTimeout: int, **_: Any) -> dict[str, Any]:
        assert QueueUrl == DLQ
        self.receives += 1
        self.now += self.seconds_per_receive
        batch = [m for m in self.letters if self.visible_at[m["MessageId"]] <= self.now][:10]
        for m in batch:
            self.visible_at[m["MessageId"]] = self.now + VisibilityTimeout
        return {"Messages": batch} if batch else {}

    def send_message(self, QueueUrl: str, MessageBody: str, **_: Any) -> dict[str, Any]:
        self.sent.append(MessageBody)
        return {"MessageId": f"new-{len(self.sent)}"}

    def delete_message(self, **call: Any) -> None:
        """The dead letter re-sent is deleted."""
        message_id = call["ReceiptHandle"].removeprefix("h-")
        self.letters = [m for m in self.letters if m["MessageId"] != message_id]
        del self.visible_at[message_id]

    def change_message_visibility_batch(self, Entries: list[dict[str, Any]], **_: Any) -> None:
        """The listing is released: visible again at once."""
        for entry in Entries:
            if (message_id := entry["ReceiptHandle"].removeprefix("h-")) in self.visible_at:
                self.visible_at[message_id] = self.now

    def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        in_flight = sum(at > self.now for at in self.visible_at.values())
        return {"Attributes": {"ApproximateNumberOfMessagesNotVisible": str(in_flight)}}


def _letter(message_id: str, reason: str | None) -> dict[str, Any]:
    """A dead letter of the ETL's (an envelope, its body not kept) with a reason; an original without one."""
    attributes = {"event_id": {"DataType": "String", "StringValue": f"evt-{message_id}"}}
    body = "{}"
    if reason:
        attributes["reason"] = {"DataType": "String", "StringValue": reason}
        body = dead_letter_body(None, NOT_KEPT_TOO_LARGE, None)
    return {"MessageId": message_id, "ReceiptHandle": f"h-{message_id}", "Body": body, "MessageAttributes": attributes}
