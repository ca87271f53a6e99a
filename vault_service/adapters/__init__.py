"""Adapters to Vault Transit and PostgreSQL, implementing the service ports."""
