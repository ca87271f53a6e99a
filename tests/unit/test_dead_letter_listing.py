"""A DLQ listing long-polls, so a drain's take-back does not end on a false empty answer (attack 10, finding 5b).

Real SQS answers a short poll (WaitTimeSeconds=0) from a sample of its servers: it can return
nothing while a few letters exist, and the take-back then returned 0 and the drain declared done
with a reasonless letter (a clear body) still in the DLQ. Ministack always answers from every
message, so the fake client below plays SQS's sampling: a short poll sees nothing.
"""

from __future__ import annotations

from typing import Any

from etl_service.adapters.dead_letter_queue import DeadLetterQueue

SOURCE, DLQ = "https://sqs.example/1/login-queue", "https://sqs.example/1/login-queue-dlq"


class SampledServers:
    """An SQS client whose short polls miss the DLQ's one letter; a long poll finds it."""

    def __init__(self) -> None:
        self.dlq = [
            {
                "MessageId": "redriven-1",
                "ReceiptHandle": "h-1",
                "Body": '{"user_id": "u"}',  # moved by SQS's redrive as it was: no reason attribute
                "MessageAttributes": {"event_id": {"DataType": "String", "StringValue": "evt-1"}},
            }
        ]
        self.sent: list[str] = []
        self.waits: list[int] = []

    def receive_message(self, QueueUrl: str, WaitTimeSeconds: int, **_: Any) -> dict[str, Any]:
        assert QueueUrl == DLQ
        self.waits.append(WaitTimeSeconds)
        if WaitTimeSeconds == 0:  # a sample of the servers: not the one holding the letter
            return {}
        found, self.dlq = self.dlq, []
        return {"Messages": found}

    def send_message(self, QueueUrl: str, MessageBody: str, **_: Any) -> dict[str, Any]:
        self.sent.append(MessageBody)
        return {"MessageId": "new-1"}

    def delete_message(self, **_: Any) -> None:
        """The dead letter re-sent is deleted."""

    def change_message_visibility_batch(self, **_: Any) -> None:
        """The listing is released."""


def test_a_take_back_long_polls_and_finds_the_letter_a_short_poll_would_miss() -> None:
    client = SampledServers()
    taken = DeadLetterQueue(client, SOURCE, DLQ).take_back_redriven()  # type: ignore[arg-type]
    assert taken == 1 and client.sent == ['{"user_id": "u"}']
    assert client.waits and min(client.waits) >= 1  # the last, empty answer too: it ends the listing
