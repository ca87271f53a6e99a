"""`tokenvault status`, `rewrap`, `rotate-encryption-key`, `rotate-fingerprint-key`: run by the vault for the team.

As `reencrypt` and `reindex` (key_job_commands.py): the vault service does the work with its own
Vault login and database role (tokenvault.v1.KeyJobs); you present only the security team's client
certificate (`--stack .stack --as security` on the embedded stack, else --address/--ca/--cert/--key
or a profile), which the vault's policy must give the command (`key_jobs`). Each change's intent
and outcome audit rows name that certificate (CN, serial, SHA-256) and keep `--reason`; the vault
anchors the intent row in the audit chain before the work.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.console import Console

from tokenvault_cli.context import Context, SettingsFailure, vault_errors
from tokenvault_cli.settings import SECURITY_ROLE
from tokenvault_client import KeyCommands, VaultClient
from tokenvault_common.key_status_text import print_key_status
from tokenvault_common.trusted_files import UntrustedFile, read_token

REASON = click.option(
    "--reason",
    required=True,
    help="Change ticket, a reference such as CHG-1234 (letters and digits in groups joined by - _ / . : #, starting"
    " with a letter, at most 64 characters; no blanks, never personal data), kept for good in the audit log.",
)
stdout = Console(highlight=False, markup=False)  # what the vault reports is data, never markup


def security_client(ctx: Context) -> VaultClient:
    """A vault client presenting the configured certificate; SettingsFailure naming the security team's when none."""
    try:
        return ctx.client()
    except SettingsFailure as missing:
        raise SettingsFailure(
            f"{missing.message}. The key commands present the security team's client certificate: on the embedded"
            f" stack `--stack .stack --as {SECURITY_ROLE}`, elsewhere --address, --ca, --cert and --key"
        ) from None


def _on(ctx: Context) -> tuple[VaultClient, KeyCommands]:
    client = security_client(ctx)
    return client, client.key_commands()


@click.command()
@click.pass_obj
@vault_errors
def status(ctx: Context) -> None:
    """Data keys, the KEK's latest and present min_decryption_version, work left, the safe min_decryption_version.

    Asked of the vault with the security team's client certificate (`--as security` on the embedded stack).
    """
    client, commands = _on(ctx)
    with client:
        print_key_status(commands.status(), stdout)


@click.command()
@REASON
@click.pass_obj
@vault_errors
def rewrap(ctx: Context, reason: str) -> None:
    """Have the vault rewrap every data key under the newest KEK version (after rotating the KEK in Vault).

    Asked of the vault with the security team's client certificate (`--as security` on the embedded stack).
    """
    client, commands = _on(ctx)
    with client:
        click.echo(f"rewrapped {commands.rewrap(reason)} data key(s) under the newest KEK version")


@click.command("rotate-encryption-key")
@REASON
@click.pass_obj
@vault_errors
def rotate_encryption_key(ctx: Context, reason: str) -> None:
    """Have the vault make a new data-encryption key active (the old one decrypts only); then run `reencrypt`.

    Asked of the vault with the security team's client certificate (`--as security` on the embedded stack).
    """
    client, commands = _on(ctx)
    with client:
        click.echo(f"data key {commands.rotate_encryption_key(reason)} is now active; run `reencrypt` next")


@click.command("rotate-fingerprint-key")
@REASON
@click.pass_obj
@vault_errors
def rotate_fingerprint_key(ctx: Context, reason: str) -> None:
    """Have the vault introduce a new (pending) fingerprint key; then run `reindex`.

    Asked of the vault with the security team's client certificate (`--as security` on the embedded stack).
    """
    client, commands = _on(ctx)
    with client:
        click.echo(f"fingerprint key {commands.rotate_fingerprint_key(reason)} is pending; run `reindex` next")


def operator_token(ctx: Context, needs: str = "retire-kek-versions writes the KEK's config") -> str:
    """Your own Vault token: $VAULT_TOKEN, else the file $VAULT_SECURITY_TOKEN_FILE (the embedded stack's by default).

    SettingsFailure (exit 2) when there is none, the file cannot be read, or it is refused (read_token: others, or
    your group, may read it, or another account could replace it), before the vault is called; the token is
    never printed.
    """
    token = os.environ.get("VAULT_TOKEN", "").strip()
    if token:
        return token
    token_file = os.environ.get("VAULT_SECURITY_TOKEN_FILE") or ctx.settings.stack_env.get("VAULT_SECURITY_TOKEN_FILE")
    if not token_file:
        raise SettingsFailure(
            f"{needs} with your own Vault token: log in (`vault login` / `bao login`) and set VAULT_TOKEN, or"
            " VAULT_SECURITY_TOKEN_FILE"
        )
    try:
        return read_token(Path(token_file))
    except UntrustedFile as error:
        raise SettingsFailure(f"VAULT_SECURITY_TOKEN_FILE {token_file} is refused: {error}; nothing was done") from None
    except OSError as error:
        raise SettingsFailure(f"cannot read VAULT_SECURITY_TOKEN_FILE {token_file}: {error.strerror}") from None


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
@vault_errors
def retire_kek_versions(ctx: Context, below: int, reason: str) -> None:
    """Have the vault retire the KEK versions below N in Transit, with your own Vault token (after `rewrap`).

    The vault checks, then writes the KEK's config with your token ($VAULT_TOKEN, or the file
    $VAULT_SECURITY_TOKEN_FILE; policy tokenvault-security), sent with the call and used for it only. Refused,
    Transit unchanged, while a data key the service may still load is wrapped under a version below N (it would
    no longer unwrap): the message names the keys; run `rewrap` first. Refused too for N past the KEK's latest
    version or under its present min_decryption_version. The raw equivalent, without these checks, is
    `bao write transit/keys/tokenvault/config min_decryption_version=N min_encryption_version=N`.

    Asked of the vault with the security team's client certificate (`--as security` on the embedded stack).
    """
    token = operator_token(ctx)
    client, commands = _on(ctx)
    with client:
        retired = commands.retire_kek_versions(below, reason, token)
    click.echo(
        f"KEK {retired.kek_name}: min_decryption_version and min_encryption_version raised to {retired.below}; the"
        " versions below it no longer decrypt (lowering it again brings them back until Vault's operators trim them)"
    )


COMMANDS = (status, rewrap, rotate_encryption_key, rotate_fingerprint_key, retire_kek_versions)
