"""The embedded stack: real OpenBao, SQS and PostgreSQL on loopback ports, without Docker.

Starts ministack for SQS and the two services. Used by `make run`, by the tests and by people.

Its processes start others (initdb, the servers) while gRPC channels may be busy on other threads: gRPC's
fork handlers then ran in the child between fork and exec and crashed it on a closed epoll descriptor
(grpc/grpc#43055: `initdb failed: ... Epoll1Poller ... epoll_wait error: Bad file descriptor`, once in CI). Nothing
here forks without exec, so gRPC's fork support is off for every process that imports this package before grpc (and
the processes it starts inherit it), unless the environment says otherwise. gRPC reads the setting when it is
imported: a process that imported grpc first keeps its fork handlers on (the test suite's tests/__init__.py imports
this package first for that; review 36, R36-1).
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
