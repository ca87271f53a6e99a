"""When a service may reach OpenBao/Vault over plain HTTP: on loopback, or on a private network by explicit opt-in.

Why refuse the rest: the connection carries the AppRole secret id (login), the Vault token, every
data key in clear (`transit/decrypt` of the wrapped keys) and, from the ETL, every refused event's
body in clear (`transit/encrypt`). An `http://` address on another host sent all of it across the
network unencrypted, without a word (attack9 Finding 7). Now such an address stops the start,
naming the setting, unless `<PREFIX>_PLAINTEXT=allow` says the path is a private network no one
else reaches (docker compose's bridge). `https://` is always accepted, and `http://` to a loopback
literal or `localhost` (the embedded stack's OpenBao), as for plain-HTTP metrics.

Only literal addresses and `localhost` count as loopback: a host name's addresses are the
resolver's to change after the check.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from tokenvault_common.env import EnvReader
from tokenvault_common.metrics_plaintext import ALLOW, allow_problem, is_loopback, read_allow


def plaintext_setting(address_setting: str) -> str:
    """The opt-in's name for an address setting: TOKENVAULT_VAULT_ADDR -> TOKENVAULT_VAULT_PLAINTEXT."""
    return address_setting.removesuffix("_ADDR") + "_PLAINTEXT"


def vault_address_problem(setting: str, address: str, allow_setting: str, plaintext: str | None) -> str | None:
    """Why `address` (the value of `setting`) may not be used, or None when it may.

    `plaintext` is the value of the opt-in `allow_setting` (normally `plaintext_setting(setting)`):
    `allow`, or None when unset.
    """
    if problem := allow_problem(allow_setting, plaintext):
        return problem
    try:
        parts = urlsplit(address)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        return f"{setting} must be an https:// URL of OpenBao/Vault (https://vault.example:8200)"
    if parts.scheme == "https" or is_loopback(host) or plaintext == ALLOW:
        return None
    return (
        f"{setting} is plain http:// to {host}, beyond this machine: the AppRole secret id, the Vault"
        " token, the data keys in clear and sealed bodies would cross the network unencrypted. Use"
        f" https://, an http:// loopback address, or {allow_setting}={ALLOW}"
        " if only a private network no one else reaches carries it"
    )


def read_vault_address(read: EnvReader, setting: str, address: str | None) -> None:
    """Check `address` (`setting`'s value, None when unset) and its opt-in in `read`.

    Records a problem in `read` (the service stops at start, exit 2) for an address that is not
    http(s), plain http:// to a host that is not loopback without `<setting prefix>_PLAINTEXT=allow`,
    or an opt-in other than `allow`.
    """
    allowed = read_allow(read, plaintext_setting(setting))
    if address and (
        problem := vault_address_problem(setting, address, plaintext_setting(setting), ALLOW if allowed else None)
    ):
        read.problems.append(problem)
