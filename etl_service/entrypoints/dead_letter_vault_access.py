"""How `dead-letters show/resend/erase` reach OpenBao: the operator's address and token, the dead-letter key.

Bodies are opened with the dead-letter key only (ETL_DLQ_SEAL_KEY), never with the key an
envelope names, and only over an address `vault_address_problem` allows: the operator's token
and the bodies in clear travel over it.
"""

from __future__ import annotations

import os
from pathlib import Path

from etl_service.adapters.dead_letter_queue import DeadLetterError
from etl_service.adapters.transit_sealer import DEAD_LETTER_KEY, open_sealed
from tokenvault_common.env import ConfigError
from tokenvault_common.trusted_files import UntrustedFile, read_token
from tokenvault_common.vault_address import plaintext_setting, vault_address_problem

VaultAccess = tuple[str, str]
"""OpenBao's address and the operator's token."""


def dead_letter_key() -> str:
    """The Transit key the ETL seals with (ETL_DLQ_SEAL_KEY): the only key bodies are opened with."""
    return os.environ.get("ETL_DLQ_SEAL_KEY") or DEAD_LETTER_KEY


def vault_access(token_file: Path | None) -> VaultAccess | None:
    """OpenBao's address and the operator's token (--token-file, else VAULT_TOKEN); None when either is missing.

    --token-file is read as tokenvault_common.trusted_files.read_token reads it: ConfigError (exit 2), naming the
    file and the fix, when others (or, the operator's own, its group) may read or write it or another local
    account could replace it (the command would open bodies under that account's token). OpenBao is not asked.
    """
    setting = "ETL_DLQ_SEAL_VAULT_ADDR" if os.environ.get("ETL_DLQ_SEAL_VAULT_ADDR") else "VAULT_ADDR"
    address = os.environ.get(setting)
    allow = plaintext_setting("ETL_DLQ_SEAL_VAULT_ADDR")  # one opt-in, whichever address is read
    if address and (problem := vault_address_problem(setting, address, allow, os.environ.get(allow) or None)):
        raise ConfigError(problem)  # the operator's token and the bodies in clear would travel over it
    try:
        token = read_token(token_file) if token_file else os.environ.get("VAULT_TOKEN", "")
    except UntrustedFile as error:
        raise ConfigError(f"--token-file {token_file} is refused: {error}; no letter was read or sent") from None
    except OSError as error:
        raise DeadLetterError(f"cannot read --token-file: {error.strerror}") from None
    return (address, token) if address and token else None


def decrypt(ciphertext: str, access: VaultAccess | None, key: str) -> str:
    """One sealed layer opened with the dead-letter key as the operator (OpenBao audits it)."""
    if access is None:  # a missing setting (exit 2), not OpenBao refusing
        raise ConfigError("opening a body needs VAULT_ADDR and the operator's token (VAULT_TOKEN or --token-file)")
    return open_sealed(*access, key, ciphertext)
