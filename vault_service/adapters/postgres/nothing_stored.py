"""Whether a failed token insert stored nothing: what `insert_new` tells its caller (`VaultError.stored_nothing`).

The vault says so to the ETL (trailer tokenvault-nothing-stored, A41-4): a Tokenize whose transactions all ended
before their COMMIT or were refused by the server stored nothing; any other end may have stored its rows. `erase`
tells its caller the same way whether it erased nothing (`VaultError.erased_nothing`: its budget given back, V50-4).
A transaction's `committing` must be set inside the block that sends its COMMIT, before that block ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg


class Writes:
    """Whether a transaction of one `insert_new` (or `erase`) may have committed rows (told to its caller on failure).

    `committing` is set by a transaction's last statement inside its block: its COMMIT goes at the block's end,
    and in pipeline mode the errors of the statements before it may only surface then (after COMMIT was sent).
    """

    __slots__ = ("committing", "may_have_stored")

    def __init__(self) -> None:
        self.committing = False
        self.may_have_stored = False


def refused_by_server(error: BaseException) -> bool:
    """Whether `error` is the database's ERROR answer to a statement: the transaction it came in did not commit.

    PostgreSQL rolls back a transaction one of whose statements - its COMMIT included - it answers with an ERROR.
    Not a FATAL or PANIC (the backend ends: after a COMMIT it answered, in a pipeline, the error still comes first
    to the driver), nor an error of the driver's own (a connection lost: no sqlstate), which says nothing of what
    the server did.
    """
    if not isinstance(error, psycopg.Error) or error.sqlstate is None:
        return False
    return error.diag.severity_nonlocalized == "ERROR"


@contextlib.contextmanager
def writing(writes: Writes) -> Iterator[None]:
    """Around one transaction that inserts tokens (inside the driver's error translation, outside the connection).

    Ended by an error before its block's last statement (no COMMIT sent: the block rolls back), or one the server
    answered with an ERROR (`refused_by_server`), it stored nothing; any other end may have stored its rows.
    """
    writes.committing = False
    try:
        yield
    except BaseException as error:
        if writes.committing and not refused_by_server(error):
            writes.may_have_stored = True
        raise
    writes.may_have_stored = True
