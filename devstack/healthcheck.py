"""`python -m devstack.healthcheck`: exit 0 when the vault answers SERVING (container health checks).

When the vault has a plaintext health-only listener (TOKENVAULT_HEALTH_ADDRESS: compose's is a Unix
socket only the service's uid reaches, so no port is open for it), the probe asks it
(vault_service.entrypoints.health_probe) and needs no certificate, so a container holds no key but
its own. Otherwise it asks the mTLS port (TOKENVAULT_GRPC_ADDRESS, TOKENVAULT_TLS_CLIENT_CA) with
the probe client certificate in HEALTHCHECK_TLS_CERT / HEALTHCHECK_TLS_KEY.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from devstack.services import vault_healthy
from vault_service.entrypoints.health_probe import serving


def main() -> int:
    """Check once; print why on failure."""
    health_address = os.environ.get("TOKENVAULT_HEALTH_ADDRESS")
    try:
        if health_address:
            ok = serving(health_address)
        else:
            port = os.environ.get("TOKENVAULT_GRPC_ADDRESS", "127.0.0.1:50051").rsplit(":", 1)[1]
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
