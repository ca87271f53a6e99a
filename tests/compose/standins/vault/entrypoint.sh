#!/bin/sh
# TEST FIXTURE: the official hashicorp/vault entrypoint, the part docker-compose.yml relies on:
# `server ARGS` runs `vault server -config=/vault/config ARGS` as user vault; other vault
# subcommands run as `vault SUBCOMMAND`; anything else runs as given.
set -eu
VAULT_CONFIG_DIR=/vault/config
case "$1" in
  server)
    shift
    set -- vault server -config="$VAULT_CONFIG_DIR" "$@" ;;
  -*|version|status|operator|read|write|secrets|auth|policy|token|login)
    set -- vault "$@" ;;
esac
if [ "$1" = vault ] && [ "$(id -u)" = 0 ]; then
  set -- setpriv --reuid=vault --regid=vault --init-groups "$@"
fi
exec "$@"
