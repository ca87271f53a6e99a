"""Sample login events for the queue, and the sender.

A generator of realistic events (with repeated ips and device ids and some malformed
messages), or the records of a JSON file.

Each message carries an `event_id` attribute derived from its source (seed and index, or file
digest and index), so loading the same events twice is recognised as a replay.
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCALES = ("US", "GB", "DE", "FR", "ES", "IT", "RU", "PH", "ID", "BR", "IN", "JP", "CN", "MX", "PT", "NL")


@dataclass(frozen=True)
class OutgoingEvent:
    """One message to send: its body and idempotency key."""

    event_id: str
    body: str


def _malformed(rng: random.Random, good: dict[str, Any]) -> str:
    kind = rng.choice(["not_json", "missing", "bad_ip", "wrong_type", "foreign", "bad_version"])
    if kind == "not_json":
        return "login event: " + str(good["user_id"])[:8]
    if kind == "missing":
        return json.dumps({k: v for k, v in good.items() if k != "device_id"})
    if kind == "bad_ip":
        return json.dumps({**good, "ip": "999.1.2.3"})
    if kind == "wrong_type":
        return json.dumps({**good, "app_version": 3})
    if kind == "bad_version":
        return json.dumps({**good, "app_version": "v2-beta"})
    return json.dumps({"foo": "oops_wrong_msg_type", "bar": str(rng.randint(0, 999))})


def generate_events(count: int, seed: int = 42, malformed_rate: float = 0.02) -> Iterator[OutgoingEvent]:
    """`count` events; ips and device ids drawn from pools so that repeats occur."""
    rng = random.Random(seed)  # noqa: S311 (reproducible sample data, not secrets)
    ips = [
        f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        for _ in range(max(count // 3, 1))
    ]
    devices = [
        f"{rng.randint(100, 999)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}" for _ in range(max(count // 2, 1))
    ]
    for index in range(count):
        version = [str(rng.randint(0, 9)), str(rng.randint(0, 12))]
        if rng.random() < 0.5:
            version.append(str(rng.randint(0, 20)))
        event = {
            "user_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "app_version": ".".join(version),
            "device_type": rng.choice(["android", "ios"]),
            "ip": rng.choice(ips),
            "locale": None if rng.random() < 0.3 else rng.choice(LOCALES),
            "device_id": rng.choice(devices),
        }
        body = _malformed(rng, event) if rng.random() < malformed_rate else json.dumps(event)
        yield OutgoingEvent(f"gen-{seed}-{count}-{index:07d}", body)


EVENT_FILE_FORM = (
    'it must hold a JSON array of events, [{"user_id": ..., "ip": ...}, ...], as examples/sample_data.json'
)
"""What an event file must hold, said when one does not (walk 53, W53-3)."""


def events_from_file(path: Path) -> list[OutgoingEvent]:
    """One event per record of a JSON array file (such as the exercise's sample_data.json)."""
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()[:16]
    try:
        records = json.loads(raw)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError: "Expecting value ..." alone named no fix (W53-3)
        raise ValueError(f"{path} is not JSON ({error}); {EVENT_FILE_FORM}") from None
    if not isinstance(records, list):
        raise ValueError(f"{path} is not a JSON array; {EVENT_FILE_FORM}")
    return [OutgoingEvent(f"file-{digest}-{i:07d}", json.dumps(r)) for i, r in enumerate(records)]


def send_events(sqs: Any, queue_url: str, events: Sequence[OutgoingEvent]) -> int:
    """Send in batches of 10 (SQS's maximum); raise if SQS refuses any; return the count."""
    for start in range(0, len(events), 10):
        chunk = events[start : start + 10]
        response = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {
                    "Id": str(i),
                    "MessageBody": e.body,
                    "MessageAttributes": {"event_id": {"DataType": "String", "StringValue": e.event_id}},
                }
                for i, e in enumerate(chunk)
            ],
        )
        if response.get("Failed"):
            raise RuntimeError(f"SQS refused {len(response['Failed'])} message(s): {response['Failed'][0]}")
    return len(events)


def main() -> None:
    """`python -m devstack.events --queue-url URL [--endpoint-url URL] (--file F | --events N)`: send events."""
    import argparse
    import os

    from etl_service.adapters.sqs import make_sqs_client

    parser = argparse.ArgumentParser(description="Send login events to an SQS queue.")
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--endpoint-url", default=os.environ.get("SQS_ENDPOINT_URL"))
    parser.add_argument("--file", type=Path)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    args = parser.parse_args()
    events = events_from_file(args.file) if args.file else list(generate_events(args.events, args.seed))
    sqs = make_sqs_client(args.endpoint_url, args.region)  # credentials: boto3's usual chain
    print(f"sent {send_events(sqs, args.queue_url, events)} events to {args.queue_url}")


if __name__ == "__main__":
    main()
