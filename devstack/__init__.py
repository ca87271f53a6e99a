"""The embedded stack: real OpenBao, SQS and PostgreSQL on loopback ports, without Docker.

Starts ministack for SQS and the two services. Used by `make run`, by the tests and by people.
"""
