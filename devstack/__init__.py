"""The embedded stack: real OpenBao, SQS and PostgreSQL on loopback ports, without Docker.

The embedded stack: real OpenBao, SQS (ministack) and PostgreSQL on free loopback ports,
plus the two services, without Docker. Used by `make run`, by the tests and by people.
"""
