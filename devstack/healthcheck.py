"""`python -m devstack.healthcheck`: exit 0 when the vault answers SERVING (container health checks).

Reads the vault's own settings (TOKENVAULT_GRPC_ADDRESS, TOKENVAULT_TLS_CLIENT_CA) and a probe
client certificate from HEALTHCHECK_TLS_CERT / HEALTHCHECK_TLS_KEY.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from devstack.services import vault_healthy


def main() -> int:
    """Check once; print why on failure."""
    port = os.environ.get("TOKENVAULT_GRPC_ADDRESS", "127.0.0.1:50051").rsplit(":", 1)[1]
    try:
        ok = vault_healthy(
            f"127.0.0.1:{port}",
            Path(os.environ["TOKENVAULT_TLS_CLIENT_CA"]),
            Path(os.environ["HEALTHCHECK_TLS_CERT"]),
            Path(os.environ["HEALTHCHECK_TLS_KEY"]),
        )
    except Exception as error:
        print(f"unhealthy: {type(error).__name__}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
