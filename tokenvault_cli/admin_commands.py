"""The security team's key commands: the vault service's own functions, run here.

`reencrypt` and `reindex`, which open every value, are not among them: the vault service runs them
for the security team's client certificate (tokenvault_cli/key_job_commands.py); nor are `audit
verify` and `audit who-saw`, which the vault service makes for it too (tokenvault_cli/audit_commands.py).

They need what the vault service has (its database role and its Vault login) and the
operator's own Vault token, under whose identity each change is audited ($VAULT_TOKEN after
`vault login` / `bao login`, or the file named by $VAULT_SECURITY_TOKEN_FILE). On the
embedded stack `--stack .stack --as security` provides all three (the stack's security-team
token unless VAULT_TOKEN is set); elsewhere run the command where the vault service's
TOKENVAULT_* settings are (`kubectl exec`, `docker compose exec vault-service`).
"""

from __future__ import annotations

import os

import click

from tokenvault_cli.context import Context, SettingsFailure
from tokenvault_cli.settings import SECURITY_ROLE

REASON = click.option(
    "--reason", required=True, help="Change ticket (a reference such as CHG-1234), kept for good in the audit log."
)


def service_environment(ctx: Context) -> dict[str, str]:
    """The vault service's settings: from the embedded stack, else this process's environment."""
    settings = ctx.settings
    if not settings.stack_env:
        return {}
    if settings.role not in (None, SECURITY_ROLE):
        raise SettingsFailure(
            f"key and audit commands are the security team's: use --as {SECURITY_ROLE}, not --as {settings.role}"
        )
    from devstack.stack import vault_service_env

    operator = {"VAULT_SECURITY_TOKEN_FILE": settings.stack_env.get("VAULT_SECURITY_TOKEN_FILE", "")}
    return {**operator, **vault_service_env(dict(settings.stack_env))}


def run_admin(ctx: Context, *argv: str) -> None:
    """Run one vault_service admin command in the vault service's settings; exit with its code."""
    environment = service_environment(ctx)
    if "VAULT_TOKEN" in os.environ:  # the operator's own login wins over the stack's token file
        environment.pop("VAULT_SECURITY_TOKEN_FILE", None)
    os.environ.update(environment)
    os.environ.setdefault("TOKENVAULT_ADMIN_LOG_LEVEL", "WARNING")
    from tokenvault_common.env import ConfigError
    from vault_service.config import VaultServiceConfig
    from vault_service.entrypoints.admin_cli import main as admin_main

    try:  # the hint below is for missing settings only, not every exit 2 (a busy --metrics-port ...)
        VaultServiceConfig.from_env(os.environ)
        settings_missing = False
    except ConfigError:
        settings_missing = True
    code = admin_main(list(argv))
    if code == 2 and settings_missing:
        click.echo(
            "tokenvault: the key and audit commands run with the vault service's settings: run them where the"
            " service runs (kubectl exec / docker compose exec vault-service), or on the embedded stack with"
            " --stack .stack --as security",
            err=True,
        )
    raise SystemExit(code)


@click.command()
@click.pass_obj
def status(ctx: Context) -> None:
    """Data keys, the KEK's latest and present min_decryption_version, work left, the safe min_decryption_version."""
    run_admin(ctx, "status")


@click.command()
@REASON
@click.pass_obj
def rewrap(ctx: Context, reason: str) -> None:
    """Rewrap every data key under the newest KEK version (after rotating the KEK in Vault)."""
    run_admin(ctx, "rewrap", "--reason", reason)


@click.command("retire-kek-versions")
@click.option(
    "--below",
    required=True,
    type=click.IntRange(min=1),
    metavar="N",
    help="The oldest KEK version to keep: Transit's min_decryption_version and min_encryption_version become N.",
)
@REASON
@click.pass_obj
def retire_kek_versions(ctx: Context, below: int, reason: str) -> None:
    """Retire the KEK versions below N in Transit, with your own Vault token (after `rewrap`).

    Refused, Transit unchanged, while a data key the service may still load is wrapped under a version below N
    (it would no longer unwrap): the message names the keys; run `rewrap` first. Refused too for N past the KEK's
    latest version or under its present min_decryption_version. The raw equivalent, without these checks, is
    `bao write transit/keys/tokenvault/config min_decryption_version=N min_encryption_version=N`.
    """
    run_admin(ctx, "retire-kek-versions", "--below", str(below), "--reason", reason)


@click.command("rotate-encryption-key")
@REASON
@click.pass_obj
def rotate_encryption_key(ctx: Context, reason: str) -> None:
    """Make a new data-encryption key active (the old one decrypts only); then run `reencrypt`."""
    run_admin(ctx, "rotate-encryption-key", "--reason", reason)


@click.command("rotate-fingerprint-key")
@REASON
@click.pass_obj
def rotate_fingerprint_key(ctx: Context, reason: str) -> None:
    """Introduce a new (pending) fingerprint key; then run `reindex`."""
    run_admin(ctx, "rotate-fingerprint-key", "--reason", reason)


COMMANDS = (
    status,
    rewrap,
    retire_kek_versions,
    rotate_encryption_key,
    rotate_fingerprint_key,
)
