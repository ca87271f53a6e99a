"""`python -m devstack.sqs_init`: the compose stack's SQS set-up job, run on every `up`.

With the emulator's root key (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from .env: this job and
the emulator hold it, no service) it creates `login-queue` and its DLQ under a redrive policy,
and an IAM user per identity under its shipped policy (devstack/sqs_identities.py). Each
identity named on the command line gets its key as an AWS shared credentials file,
`<DIR>/<identity>-sqs-credentials`, mode 0400, owned by the uid of the one service that mounts
DIR (AWS_SHARED_CREDENTIALS_FILE points there), and its key id (no secret) beside it in
`...-sqs-credentials.key-id`, which this job reads back (it may not read the 0400 file). A key
already handed out is kept while the emulator still lists it among its user's keys (an `up` on a
running stack); an emulator that restarted (it keeps users in memory), or a file whose key the
user no longer has (a job killed between deleting the old keys and writing the new one, a volume
from elsewhere), gets a new key.

Identities are `IDENTITY:UID:DIR`, e.g. `etl:10002:/sqs-creds/etl-service`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from devstack.sqs import create_queues
from devstack.sqs_identities import IDENTITIES, REGION, SqsKey, create_identity, iam_client, key_listed


def credentials_file(directory: Path, identity: str) -> Path:
    """Where `identity`'s key goes in its service's volume."""
    return directory / f"{identity}-sqs-credentials"


def key_id_file(path: Path) -> Path:
    """Beside the credentials file at `path`: its access key id alone (not a secret), readable by this job.

    The job runs as root with no capability but CHOWN, so it cannot read the 0400 credentials file it
    handed to the service's uid; it reads the key id from here to decide whether the key is kept.
    """
    return path.with_name(f"{path.name}.key-id")


def write_credentials(path: Path, key: SqsKey, uid: int) -> None:
    """`key` as the default profile of a shared credentials file, 0400, owned by `uid` (replaced atomically).

    Its key id goes to `key_id_file(path)` afterwards: a job killed in between leaves the earlier id
    there, which the emulator no longer lists, so the next run hands out a new key.
    """
    staged = path.with_name(f".{path.name}.new")
    staged.unlink(missing_ok=True)
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "w") as out:
        out.write(
            f"[default]\naws_access_key_id = {key.access_key_id}\naws_secret_access_key = {key.secret_access_key}\n"
        )
    os.chown(staged, uid, uid)
    staged.replace(path)
    staged_id = key_id_file(path).with_name(f".{key_id_file(path).name}.new")
    staged_id.unlink(missing_ok=True)
    staged_id.write_text(key.access_key_id + "\n")
    staged_id.chmod(0o444)
    staged_id.replace(key_id_file(path))


def handed_out_key_id(path: Path) -> str:
    """The access key id handed out in the credentials file at `path` (from its key-id file), or "" if none."""
    try:
        return key_id_file(path).read_text().strip() if path.exists() else ""
    except (OSError, UnicodeDecodeError):
        return ""


def parse_identity(text: str) -> tuple[str, int, Path]:
    """`IDENTITY:UID:DIR`."""
    identity, _, rest = text.partition(":")
    uid, _, directory = rest.partition(":")
    if identity not in IDENTITIES or not uid.isdigit() or not directory:
        raise argparse.ArgumentTypeError(f"{text!r}: expected IDENTITY:UID:DIR, IDENTITY one of {sorted(IDENTITIES)}")
    return identity, int(uid), Path(directory)


def main(argv: list[str] | None = None) -> int:
    """Queues, users, keys; exit 0, or 1 saying what failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("identities", nargs="+", type=parse_identity, help="IDENTITY:UID:DIR")
    args = parser.parse_args(argv)
    root = SqsKey(os.environ.get("AWS_ACCESS_KEY_ID", ""), os.environ.get("AWS_SECRET_ACCESS_KEY", ""))
    region = os.environ.get("AWS_REGION", REGION)
    queue_url, dlq_url = create_queues(args.endpoint_url, 30, key=root)
    print(f"queues: {queue_url} (redrive to {dlq_url} after 5 receives)")
    iam = iam_client(args.endpoint_url, root, region)
    for identity, uid, directory in args.identities:
        path = credentials_file(directory, identity)
        handed_out = handed_out_key_id(path)
        if handed_out and key_listed(iam, identity, handed_out):
            print(f"{identity}: key kept ({path})")
            continue
        write_credentials(path, create_identity(iam, identity, region), uid)
        print(f"{identity}: new key in {path} (uid {uid})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
