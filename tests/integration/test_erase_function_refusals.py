"""vault.erase_tokens, called directly, writes no erase row that does not add up (review 25, R25-5; migration 0033).

The serving role may call vault.erase_tokens (the service's Erase does). Called directly it wrote
a chained erase row of whatever it was given: `ok: 0 erased, -7 not erased` under
`privacy-officer`, a NULL purpose ending in a bare NotNullViolation. Against the real PostgreSQL,
as the serving role: each nonsensical call is refused with a named error, and nothing is written
or erased; a call as the service makes it still writes its row.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.integration.own_database import database_of_its_own

IP, DEV = "ip_" + "A" * 22, "dev_" + "B" * 22
HASH = b"\x01" * 16
_CALL = "SELECT vault.erase_tokens(%s::text[], %s::bytea[], %s, %s, %s, %s, %s, %s)"
_AUDIT = "SELECT count(*), coalesce(max(id), 0) FROM vault.audit_log"


@pytest.fixture(scope="module")
def env(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    with database_of_its_own(stack_env, "erase_calls", migrated=True) as own:
        yield own


def _call(env: dict[str, str], args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    with psycopg.connect(env["PG_VAULT_DSN"]) as vault:
        return vault.execute(_CALL, args).fetchall()


def _audit(env: dict[str, str]) -> tuple[Any, ...]:
    with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
        row = admin.execute(_AUDIT).fetchone()
    assert row is not None
    return tuple(row)


GOOD = ([IP, DEV], [HASH, HASH], 3, "privacy-officer", "5e:41", "ab" * 32, "GDPR-2026-1", "device_id,ip")


def _with(**changes: Any) -> tuple[Any, ...]:
    names = ("tokens", "hashes", "count", "client", "serial", "sha", "purpose", "types")
    return tuple(changes.get(name, value) for name, value in zip(names, GOOD, strict=True))


@pytest.mark.parametrize(
    ("case", "args", "named"),
    [
        ("review 25: no token, -7 items", ([], [], -7, "privacy-officer", "f", "f", "GDPR-FORGED", "ip"), "no tokens"),
        ("no tokens at all", _with(tokens=None, hashes=None), "no tokens"),
        ("a NULL token", _with(tokens=[IP, None]), "no tokens, or a NULL or empty one"),
        ("an empty token", _with(tokens=[IP, ""]), "no tokens, or a NULL or empty one"),
        ("a negative item count", _with(count=-1), "an item count of -1 for 2 token(s)"),
        ("fewer items than tokens", _with(count=1), "an item count of 1 for 2 token(s)"),
        ("more items than a call carries", _with(count=2147483647), "an item count of 2147483647"),
        ("a NULL item count", _with(count=None), "an item count of NULL"),
        ("a NULL purpose (review 25: NotNullViolation)", _with(purpose=None), "NULL certificate serial"),
        ("a NULL client", _with(client=None), "a NULL or empty client"),
        ("an empty client", _with(client=""), "a NULL or empty client"),
        ("a NULL serial", _with(serial=None), "NULL certificate serial"),
        ("a NULL certificate digest", _with(sha=None), "NULL certificate serial"),
        ("an unknown type", _with(types="bogus,ip"), "token types 'bogus,ip'"),
        ("types out of order", _with(types="ip,device_id"), "token types 'ip,device_id'"),
        ("a type twice", _with(types="device_id,ip,ip"), "token types"),
        ("a token's type left out", _with(types="ip"), "each token's among them"),
        ("no types", _with(types=""), "token types ''"),
        ("NULL types", _with(types=None), "token types NULL"),
    ],
)
def test_a_call_that_does_not_add_up_is_refused_and_writes_nothing(
    env: dict[str, str], case: str, args: tuple[Any, ...], named: str
) -> None:
    before = _audit(env)
    with pytest.raises(errors.InvalidParameterValue) as refused:
        _call(env, args)
    assert "erasure refused: " in str(refused.value) and named in str(refused.value), case
    assert "nothing was erased" in str(refused.value)
    assert _audit(env) == before, f"{case}: an audit row was written"


def test_a_call_as_the_service_makes_it_still_writes_its_row(env: dict[str, str]) -> None:
    count, newest = _audit(env)
    assert _call(env, GOOD) == []  # neither token was ever issued: nothing to erase
    assert _call(env, _with(tokens=[IP], hashes=[HASH], count=1, types="ip", serial="", sha="", purpose="")) == []
    with psycopg.connect(env["PG_ADMIN_DSN"]) as admin:
        rows = admin.execute(
            "SELECT client, item_count, outcome, token_types FROM vault.audit_log WHERE id > %s ORDER BY id", (newest,)
        ).fetchall()
    assert rows == [
        ("privacy-officer", 3, "ok: 0 erased, 3 not erased", "device_id,ip"),
        ("privacy-officer", 1, "ok: 0 erased, 1 not erased", "ip"),
    ]
    assert _audit(env)[0] == count + 2
