"""`python -m devstack.exercise_queue --queue-url URL`: give an existing queue a dead-letter queue.

The exercise's LocalStack image creates `login-queue` (already holding its 100 events) and no
DLQ. This creates `<name>-dlq` and sets the source queue's redrive policy, so the ETL can run
against that image with nothing but ETL_QUEUE_URL set. Idempotent: running it again changes
nothing.
"""

from __future__ import annotations

import argparse
import os

from devstack.sqs import attach_dead_letter_queue
from etl_service.adapters.sqs import endpoint_for_queue, make_sqs_client


def main() -> None:
    """Parse arguments and attach the DLQ (credentials and region from the AWS environment)."""
    parser = argparse.ArgumentParser(description="Give an existing SQS queue a dead-letter queue.")
    parser.add_argument("--queue-url", required=True)
    args = parser.parse_args()
    sqs = make_sqs_client(
        os.environ.get("SQS_ENDPOINT_URL") or endpoint_for_queue(args.queue_url),
        os.environ.get("AWS_REGION", "us-east-1"),
    )
    print(f"dead-letter queue: {attach_dead_letter_queue(sqs, args.queue_url)}")


if __name__ == "__main__":
    main()
