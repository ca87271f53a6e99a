"""`python -m vault_service.admin <command>`: key rotation, re-encryption, audit verification."""

import sys

from vault_service.entrypoints.admin_cli import main

if __name__ == "__main__":
    sys.exit(main())
