"""The typed client of the token vault: channel (mTLS), deadlines, retries, chunking, typed errors.

    from tokenvault_client import ClientIdentity, TokenType, VaultClient

    identity = ClientIdentity(ca=Path("ca.pem"), cert=Path("analyst.pem"), key=Path("analyst-key.pem"),
                              server_name="localhost")
    with VaultClient.connect("127.0.0.1:50051", identity) as vault:
        outcomes = vault.detokenize(["ip_..."], purpose="CASE-123")

Every caller of the vault (the ETL, the `tokenvault` command, the embedded stack, the
benchmarks, the tests) goes through `VaultClient`.
"""

from tokenvault_client.audit_reports import AuditVerdict, WhoSawRow
from tokenvault_client.channel import ClientIdentity, open_channel, secure_channel
from tokenvault_client.chunking import MAX_ITEMS_PER_CALL, MAX_REQUEST_BYTES, ChunkLimits
from tokenvault_client.client import VaultClient
from tokenvault_client.errors import (
    GRPC_SLOTS_FULL,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProtocolError,
    RateLimited,
    ServerBusy,
    Unauthenticated,
    Unavailable,
    VaultClientError,
)
from tokenvault_client.key_commands import (
    DataKeyInfo,
    InterruptedKeyJob,
    KekVersionsRetired,
    KeyCommands,
    KeyStatus,
    UnpairedKeyJobOutcome,
)
from tokenvault_client.key_jobs import KeyJobProgress
from tokenvault_client.models import (
    DetokenizeOutcome,
    EraseOutcome,
    ItemError,
    Reveal,
    Revealed,
    TokenColumn,
    TokenOutcome,
    TokenType,
    type_of_token,
)
from tokenvault_client.retry import NO_RETRY, RetryPolicy

__all__ = [
    "GRPC_SLOTS_FULL",
    "MAX_ITEMS_PER_CALL",
    "MAX_REQUEST_BYTES",
    "NO_RETRY",
    "AuditVerdict",
    "ChunkLimits",
    "ClientIdentity",
    "DataKeyInfo",
    "DeadlineExceeded",
    "DetokenizeOutcome",
    "EraseOutcome",
    "Internal",
    "InterruptedKeyJob",
    "InvalidArgument",
    "ItemError",
    "KekVersionsRetired",
    "KeyCommands",
    "KeyJobProgress",
    "KeyStatus",
    "NotFound",
    "PermissionDenied",
    "ProtocolError",
    "RateLimited",
    "RetryPolicy",
    "Reveal",
    "Revealed",
    "ServerBusy",
    "TokenColumn",
    "TokenOutcome",
    "TokenType",
    "Unauthenticated",
    "Unavailable",
    "UnpairedKeyJobOutcome",
    "VaultClient",
    "VaultClientError",
    "WhoSawRow",
    "open_channel",
    "secure_channel",
    "type_of_token",
]
