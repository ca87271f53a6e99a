"""The test suite (tests/conftest.py: its fixtures, which start real OpenBao, PostgreSQL and SQS).

devstack is imported first, before anything imports grpc: gRPC reads GRPC_ENABLE_FORK_SUPPORT when it is imported,
and devstack turns it off (9237bc9: a child forked by the stack's fixtures crashed between fork and exec,
grpc/grpc#43055). tests/conftest.py imported grpc before devstack, so the setting was read "false" and the fork
handlers still ran in every child the suite forked (review 36, R36-1; tests/unit/test_grpc_fork_support_off.py).
"""

import devstack  # noqa: F401  (first: see above)
