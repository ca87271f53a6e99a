"""Typed reading of configuration from an environment mapping, with errors a person can act on."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

T = TypeVar("T", int, float)


class ConfigError(ValueError):
    """The configuration is missing or invalid; the message names the variable and the fix."""


class EnvReader:
    """Reads settings from a mapping (normally `os.environ`) and collects every problem at once."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self.problems: list[str] = []

    def text(self, name: str, default: str | None = None) -> str:
        """A required string (or `default` when given and the variable is unset or empty)."""
        value = self._env.get(name, "").strip()
        if value:
            return value
        if default is None:
            self.problems.append(f"{name} is required but not set")
            return ""
        return default

    def optional(self, name: str) -> str | None:
        """A string that may be absent."""
        value = self._env.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int, minimum: int, maximum: int) -> int:
        """An integer within [minimum, maximum]."""
        return self._bounded(name, int, "an integer", default, minimum, maximum)

    def number(self, name: str, default: float, minimum: float, maximum: float) -> float:
        """A float within [minimum, maximum]."""
        return self._bounded(name, float, "a number", default, minimum, maximum)

    def _bounded(self, name: str, parse: Callable[[str], T], kind: str, default: T, minimum: T, maximum: T) -> T:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = parse(raw)
        except ValueError:
            self.problems.append(f"{name} must be {kind}, got {raw!r}")
            return default
        if not minimum <= value <= maximum:
            self.problems.append(f"{name} must be between {minimum} and {maximum}, got {value}")
            return default
        return value

    def existing_file(self, name: str, required: bool = True) -> Path | None:
        """A path that must name a readable file."""
        raw = self.text(name) if required else self.optional(name)
        if not raw:
            return None
        path = Path(raw)
        if not path.is_file():
            self.problems.append(f"{name} points to {raw}, which is not a file")
        return path

    def check(self, service: str) -> None:
        """Raise ConfigError listing every problem found, if any."""
        if self.problems:
            lines = "\n  - ".join(self.problems)
            raise ConfigError(f"invalid {service} configuration:\n  - {lines}")
