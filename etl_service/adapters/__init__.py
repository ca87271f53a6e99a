"""Adapters to SQS, the vault service (gRPC) and PostgreSQL, implementing the ETL ports."""
