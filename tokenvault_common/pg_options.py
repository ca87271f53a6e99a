"""Settings a PostgreSQL session starts with, as libpq's `options` (`-c name=value ...`).

Given at connection start they take precedence over role and database defaults, which any login may set for its
own later sessions (`ALTER ROLE CURRENT_USER SET ...`): the vault's pools, the lock watchdog and `tokenvault
erase`'s count pin what they depend on this way.
"""

from __future__ import annotations

from collections.abc import Mapping


def startup_options(settings: Mapping[str, str]) -> str:
    """Libpq's `options` for `settings`: `-c name=value`, a backslash or a space in a value escaped by a backslash."""
    return " ".join(f"-c {name}={_escaped(value)}" for name, value in settings.items())


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace(" ", "\\ ")
