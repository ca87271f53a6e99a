"""When a service may serve its metrics in plain HTTP: on loopback, or on a private network by explicit opt-in.

Why refuse the rest: the counters are a membership oracle (send an event, watch
`tokenvault_tokenize_new_tokens_total` move), and plain HTTP serves them to whoever reaches the
port. Without `<PREFIX>_TLS_*` the metrics used to be served plainly on any address with a
warning; a deployment that set `<PREFIX>_ADDRESS=0.0.0.0` and forgot the TLS files opened the
oracle to its whole network. Now a non-loopback address without TLS stops the start, naming the
settings, unless `<PREFIX>_PLAINTEXT=allow` says the scrape runs over a network only the scraper
reaches. Loopback stays allowed as before (a local user can still read it: the embedded stack
serves TLS there too).

Only literal addresses and `localhost` count as loopback: a host name's addresses are the
resolver's to change after the check.
"""

from __future__ import annotations

import ipaddress

from tokenvault_common.env import EnvReader

ALLOW = "allow"
"""The one value of `<PREFIX>_PLAINTEXT` that opts in."""


def is_loopback(address: str) -> bool:
    """Whether `address` (an IP literal or `localhost`, as `<PREFIX>_ADDRESS` takes it) is this machine's alone."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to later


def allow_problem(setting: str, value: str | None) -> str | None:
    """Why `value` of the opt-in `setting` (a `<PREFIX>_PLAINTEXT`) is refused, or None: it is `allow` or unset."""
    return None if value in (None, ALLOW) else f"{setting} must be {ALLOW} or unset, got {value!r}"


def read_allow(read: EnvReader, setting: str) -> bool:
    """Whether the opt-in `setting` is `allow`; any other value set records a problem in `read`."""
    value = read.optional(setting)
    if problem := allow_problem(setting, value):
        read.problems.append(problem)
    return value == ALLOW


def read_metrics_plaintext(read: EnvReader, prefix: str, port: int, address: str) -> bool:
    """`<prefix>_PLAINTEXT=allow`: whether plain-HTTP metrics may be served beyond loopback.

    Records a problem in `read` (the service stops at start) when metrics are on (`port`), no
    `<prefix>_TLS_*` setting is given, `address` (`<prefix>_ADDRESS`) is not loopback and there is
    no opt-in; also when the opt-in is another value, or contradicts TLS settings that are given.
    """
    allowed = read_allow(read, f"{prefix}_PLAINTEXT")
    tls = [f"{prefix}_TLS_{name}" for name in ("CERT", "KEY", "CLIENT_CA")]
    if any(read.optional(name) for name in tls):
        if allowed:
            read.problems.append(f"{prefix}_PLAINTEXT={ALLOW} contradicts {prefix}_TLS_*: unset one of them")
        return False
    if port and not is_loopback(address) and not allowed:
        read.problems.append(
            f"metrics would be served in plain HTTP on {address} ({prefix}_ADDRESS), beyond this machine:"
            " whoever reaches the port reads counters that tell whether a value is in the vault. Set"
            f" {tls[0]}, {tls[1]} and {tls[2]} (metrics over TLS to the scraper's certificate), or"
            f" {prefix}_ADDRESS=127.0.0.1, or {prefix}_PLAINTEXT={ALLOW} if only the scraper's private"
            " network reaches that address"
        )
    return allowed
