"""What every subcommand shares: resolved settings, a vault client, errors a person can act on."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

import click

from tokenvault_cli.output import visible
from tokenvault_cli.settings import Settings, SettingsError, load_profile, refuse_command_line_dsn, resolve
from tokenvault_client import (
    ChunkLimits,
    DeadlineExceeded,
    PermissionDenied,
    RateLimited,
    RetryPolicy,
    Unavailable,
    VaultClient,
    VaultClientError,
)

F = TypeVar("F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """A refusal or failure, reported without a traceback; exit code 1."""

    def show(self, file: Any = None) -> None:
        """Print as `tokenvault: <message>` on stderr, its control characters escaped but its line breaks.

        A message may quote the database (a failed query's error quotes the stored value it could
        not read): data, never instructions for the terminal (attack 18).
        """
        click.echo(f"tokenvault: {visible(self.format_message(), keep=chr(10))}", err=True, file=file)


class SettingsFailure(Failure):
    """Settings are missing or unusable; exit code 2."""

    exit_code = 2


class Context:
    """What the group's options gathered; settings are resolved on first use (so --help needs none)."""

    def __init__(self, flags: dict[str, Any], on_command_line: frozenset[str] = frozenset()) -> None:
        self.flags = flags
        self.on_command_line = on_command_line
        """The names of the flags given on the command line (not from their environment variables)."""
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The resolved settings; Failure(exit 2) naming what is wrong."""
        if self._settings is None:
            try:
                if "analyst_dsn" in self.on_command_line:
                    refuse_command_line_dsn(str(self.flags["analyst_dsn"]))
                profile = load_profile(self.flags.pop("profile_file", None), self.flags.pop("profile", None))
                self._settings = resolve(self.flags, profile)
            except SettingsError as error:
                raise SettingsFailure(str(error)) from None
        return self._settings

    def client(
        self,
        on_wait: Callable[[VaultClientError, float], None] | None = None,
        limits: ChunkLimits | None = None,
        rate_limit_wait: float = 3600.0,
    ) -> VaultClient:
        """A vault client as the configured identity, waiting out rate limits up to `rate_limit_wait` s in all."""
        settings = self.settings
        try:
            identity = settings.identity()
        except SettingsError as error:
            raise SettingsFailure(str(error)) from None
        assert settings.address is not None
        return VaultClient.connect(
            settings.address,
            identity,
            deadline=settings.deadline or 30.0,
            retry=RetryPolicy(max_rate_limit_wait=rate_limit_wait),
            on_wait=on_wait,
            limits=limits,
        )


TRANSPORT_MARKS = (
    "failed to connect",
    "connections to all backends failing",
    "dns resolution failed",
    "socket closed",
    "connection reset",
    "connection refused",
    "broken pipe",
    "goaway",
    "keepalive",
    "endpoint closing",
)
"""How gRPC itself describes a vault it did not reach (or lost): the vault's own UNAVAILABLE answers name none."""


def _not_reached(error: VaultClientError) -> bool:
    """Whether gRPC could not reach the vault service, rather than the service answering that it cannot serve."""
    details = error.details.lower()
    return not details or any(mark in details for mark in TRANSPORT_MARKS)


OPERATOR_CREDENTIAL_REFUSED = "your Vault token "
"""How the vault begins a refusal of the Vault token `retire-kek-versions` sends (key_job_session.operator_kek_of)."""


def explain(error: VaultClientError, settings: Settings) -> str:
    """The error with what a person can do about it."""
    text = str(error)
    if isinstance(error, PermissionDenied) and error.details.startswith(OPERATOR_CREDENTIAL_REFUSED):
        # Walk48, W48-14: the certificate was let in; the client's hint ("the vault's policy does not allow this
        # identity") sent the team after the wrong credential.
        return (
            f"{error.code.name}: {error.details} (your client certificate was accepted; the Vault token sent was"
            " not: $VAULT_TOKEN when set, else the file $VAULT_SECURITY_TOKEN_FILE)"
        )
    if isinstance(error, RateLimited):
        if error.call_too_big:
            return f"{text}; send fewer tokens per call (--batch-size)"
        if "retry in " in text:  # the vault's own refusal says it already (walk48, W48-8: said twice)
            return text
        return f"{text}; retry in {error.retry_after:.1f} s"
    if isinstance(error, Unavailable) and not error.hint:
        where = settings.address or "the configured address"
        if not _not_reached(error):
            return (
                f"{text}; the vault service at {where} answered, so it runs: something it needs (Vault/OpenBao,"
                " PostgreSQL) is unavailable; retry later (embedded stack: `make status` names what is down)"
            )
        return f"{text}; is the vault service running at {where}? (embedded stack: `make status`, `make up`)"
    if isinstance(error, DeadlineExceeded):
        return f"{text}; the vault did not answer in time: retry, or raise --deadline"
    return text


def vault_errors(command: F) -> F:
    """Turn the client's typed errors into messages a person can act on (exit 1)."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except VaultClientError as error:
            context = click.get_current_context().find_object(Context)
            raise Failure(explain(error, context.settings) if context else str(error)) from None
        except BrokenPipeError:
            raise  # the reader went away (`| head`): click ends quietly, as any command in a pipe does
        except OSError as error:
            raise SettingsFailure(str(error)) from None

    return cast(F, wrapper)
