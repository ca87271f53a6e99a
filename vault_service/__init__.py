"""Token vault: stable random tokens for PII, envelope-encrypted under keys held by Vault Transit."""

# gRPC's I/O engine is chosen when gRPC starts: tokenvault_client sets it before anything here imports grpc.
import tokenvault_client as _tokenvault_client  # noqa: F401
