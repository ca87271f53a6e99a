"""Entry points of the vault: the gRPC server and its command line."""
