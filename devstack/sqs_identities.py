"""The SQS emulator's identities: one IAM user per identity, under the policy shipped for it.

The stack's set-up makes a random root key for the emulator (`root_key`), and with it, through
the emulator's IAM API, a user per identity with its policy from `deploy/aws/` (REGION,
ACCOUNT_ID and QUEUE_KMS_KEY_ID substituted) and an access key (`create_identities`). The
root key is used for that and for the queues only; each service gets its identity's key.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

POLICY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "aws"
REGION = "us-east-1"
ACCOUNT_ID = "000000000000"  # ministack's default account
NO_QUEUE_KMS_KEY = "00000000-0000-0000-0000-000000000000"
"""The emulator's queues are not encrypted with KMS: the policies' KMS statement names no real key."""
IDENTITIES = {
    "etl": "tokenvault-etl-sqs-policy.json",
    "dlq-operator": "tokenvault-dlq-operator-sqs-policy.json",
    "producer": "tokenvault-producer-sqs-policy.json",
}
"""Identity -> its policy file: the ETL, the DLQ operators (`dead-letters`), what sends events."""
USER_PREFIX = "tokenvault-"


@dataclass(frozen=True)
class SqsKey:
    """An access key of the emulator."""

    access_key_id: str
    secret_access_key: str

    def env(self) -> dict[str, str]:
        """As boto3 and the AWS CLI read it from the environment."""
        return {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}


def root_key() -> SqsKey:
    """A fresh random root key: no fixed key ("test", an account id) is root on the stack's emulator."""
    alphabet = string.ascii_uppercase + string.digits
    return SqsKey("ROOT" + "".join(secrets.choice(alphabet) for _ in range(16)), secrets.token_urlsafe(30))


def policy_document(policy_file: str, region: str = REGION, account_id: str = ACCOUNT_ID) -> str:
    """The shipped policy `policy_file` with its placeholders filled in for the emulator."""
    text = (POLICY_DIR / policy_file).read_text()
    text = text.replace("REGION", region).replace("ACCOUNT_ID", account_id)
    return json.dumps(json.loads(text.replace("QUEUE_KMS_KEY_ID", NO_QUEUE_KMS_KEY)))


def iam_client(endpoint_url: str, root: SqsKey, region: str = REGION) -> Any:
    """The emulator's IAM API with the root key."""
    return boto3.client(
        "iam",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=root.access_key_id,
        aws_secret_access_key=root.secret_access_key,
    )


def create_identity(iam: Any, identity: str, region: str = REGION) -> SqsKey:
    """The IAM user of `identity` (created if missing) under its policy, with a new key: its only one."""
    user, policy_file = USER_PREFIX + identity, IDENTITIES[identity]
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user, PolicyName=policy_file.removesuffix(".json"), PolicyDocument=policy_document(policy_file, region)
    )
    for old in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
        iam.delete_access_key(UserName=user, AccessKeyId=old["AccessKeyId"])
    created = iam.create_access_key(UserName=user)["AccessKey"]
    return SqsKey(created["AccessKeyId"], created["SecretAccessKey"])


def key_listed(iam: Any, identity: str, access_key_id: str) -> bool:
    """Whether the emulator has `identity`'s IAM user with the key `access_key_id` (not after a restart)."""
    try:
        listed = iam.list_access_keys(UserName=USER_PREFIX + identity)["AccessKeyMetadata"]
    except iam.exceptions.NoSuchEntityException:
        return False
    return any(key["AccessKeyId"] == access_key_id for key in listed)


def create_identities(endpoint_url: str, root: SqsKey, region: str = REGION) -> dict[str, SqsKey]:
    """An IAM user per identity under its policy; return each identity's new key."""
    iam = iam_client(endpoint_url, root, region)
    return {identity: create_identity(iam, identity, region) for identity in IDENTITIES}
