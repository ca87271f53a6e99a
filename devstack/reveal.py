"""`python -m devstack.reveal`: Detokenize tokens as the client whose certificate is given.

For the compose stack's `analyst` tool container (and any client container): address and
certificate files come from the environment (TOKENVAULT_ADDRESS, CLIENT_TLS_CA, CLIENT_TLS_CERT,
CLIENT_TLS_KEY), the purpose (a case reference, never PII) and the tokens from the command line.
Prints one JSON object per token: `{"token", "value", "reveal"}` or `{"token", "error"}`. The
values are what the caller asked to see, so they go to its terminal, never to a log.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import grpc

from tokenvault_api.v1 import vault_pb2, vault_pb2_grpc
from tokenvault_common.grpc_tls import secure_channel


def main(argv: list[str] | None = None) -> int:
    """Reveal the tokens; exit 1 when the call itself is refused."""
    parser = argparse.ArgumentParser(prog="python -m devstack.reveal", description=__doc__.splitlines()[0])
    parser.add_argument("--purpose", required=True, help="why: a case reference such as CASE-1234")
    parser.add_argument("tokens", nargs="+")
    args = parser.parse_args(argv)
    env = os.environ
    channel = secure_channel(
        env.get("TOKENVAULT_ADDRESS", "vault-service:50051"),
        Path(env["CLIENT_TLS_CA"]),
        Path(env["CLIENT_TLS_CERT"]),
        Path(env["CLIENT_TLS_KEY"]),
        env.get("TOKENVAULT_SERVER_NAME", "vault-service"),
    )
    with channel:
        stub = vault_pb2_grpc.TokenVaultStub(channel)
        try:
            response = stub.Detokenize(
                vault_pb2.DetokenizeRequest(tokens=args.tokens, purpose=args.purpose), timeout=10
            )
        except grpc.RpcError as error:
            print(f"Detokenize refused: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    for token, result in zip(args.tokens, response.results, strict=True):
        if result.WhichOneof("result") == "value":
            reveal = vault_pb2.Reveal.Name(result.value.reveal).removeprefix("REVEAL_").lower()
            print(json.dumps({"token": token, "value": result.value.value, "reveal": reveal}))
        else:
            print(json.dumps({"token": token, "error": f"{result.error.code}: {result.error.message}"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
