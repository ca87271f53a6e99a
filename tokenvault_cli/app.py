"""The `tokenvault` command: global options and the subcommands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from tokenvault_cli import audit_commands, key_commands, key_job_commands, login_row_keys_commands, vault_commands
from tokenvault_cli.context import Context
from tokenvault_cli.settings import ROLES

EPILOG = """\b
Settings come from flags, then TOKENVAULT_* environment variables, then a profile
(--profile NAME in ~/.config/tokenvault/profiles.toml, or --profile-file), then the embedded stack:
  tokenvault --stack .stack --as analyst reveal ip_... --purpose CASE-123
Every subcommand has --help.
"""


class _Tokenvault(click.Group):
    """The group, saying so when one of its own options is given after the subcommand (W44-1, walk46 W46-5)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as error:
            own = {name for param in self.params for name in param.opts if name.startswith("--")}
            if error.option_name not in own:
                raise
            name, sub = error.option_name, ctx.invoked_subcommand or "COMMAND"
            said = f"No such option {name!r} of {sub}: {name} is an option of tokenvault itself, given before"
            raise click.NoSuchOption(
                name, f"{said} the subcommand: tokenvault {name} ... {sub} ...", ctx=error.ctx
            ) from None


@click.group(
    cls=_Tokenvault,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EPILOG,
)
@click.option(
    "--stack",
    "stack_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="TOKENVAULT_STACK",
    help="Act as a client of the embedded stack in DIR (reads DIR/stack.env), e.g. .stack",
)
@click.option(
    "--as", "role", type=click.Choice(ROLES), envvar="TOKENVAULT_AS", help="Who to act as on the embedded stack."
)
@click.option("--profile", envvar="TOKENVAULT_PROFILE", help="Profile (a [NAME] table) of the profile file.")
@click.option(
    "--profile-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="TOKENVAULT_PROFILE_FILE",
    help="TOML profile file [default: ~/.config/tokenvault/profiles.toml]; refused if anyone but you (or root)"
    " may change it or a directory above it.",
)
@click.option("--address", envvar="TOKENVAULT_ADDRESS", help="The vault's gRPC address, host:port.")
@click.option("--ca", envvar="TOKENVAULT_CA", help="CA certificate (PEM) that signed the vault's certificate.")
@click.option("--cert", envvar="TOKENVAULT_CERT", help="Your client certificate (PEM); its CN is who you are.")
@click.option("--key", envvar="TOKENVAULT_KEY", help="Your client certificate's private key (PEM).")
@click.option("--server-name", envvar="TOKENVAULT_SERVER_NAME", help="Name to verify the vault's certificate for.")
@click.option(
    "--dsn",
    "analyst_dsn",
    envvar="TOKENVAULT_ANALYST_DSN",
    help="Read-only database for --query and erase's count. One holding a password is refused here (ps and the"
    " shell's history show the command line): put the password in ~/.pgpass (PGPASSFILE), or give the DSN in"
    " TOKENVAULT_ANALYST_DSN or a profile's analyst_dsn.",
)
@click.option(
    "--deadline",
    type=float,
    envvar="TOKENVAULT_DEADLINE",
    help="Seconds per vault call, above 0 and at most 86400 (a day) [default: 30].",
)
@click.option(
    "--login-row-keys",
    envvar="TOKENVAULT_LOGIN_ROW_KEYS",
    help="Public keys of the ETL's row-signing key (JSON: `bao read -format=json transit/keys/tokenvault-login-rows`,"
    " or `login-row-keys refresh`) with which erase and reveal --verify-rows verify the rows of user_logins holding"
    " the tokens; the embedded stack's by default. Env: TOKENVAULT_LOGIN_ROW_KEYS.",
)
@click.pass_context
def cli(ctx: click.Context, /, **flags: Any) -> None:
    """Reveal, erase and tokenize values in the token vault; the security team's key commands."""
    given = frozenset(name for name in flags if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE)
    ctx.obj = Context(flags, given)


for command in (
    *vault_commands.COMMANDS,
    *key_commands.COMMANDS,
    *key_job_commands.COMMANDS,
    *audit_commands.COMMANDS,
    *login_row_keys_commands.COMMANDS,
):
    cli.add_command(command)
audit_commands.audit.add_command(login_row_keys_commands.audit_login_rows)  # read here, not by the vault


def main() -> None:
    """Console script entry point."""
    cli(prog_name="tokenvault")
