"""audit-verify's row hash is the chain trigger's, for every value the audit columns can hold (review 16).

The database chains each row (`vault.audit_row_hash`, hash version 2) and the verifier recomputes
it in Python: where the two encode a value differently, a genuine log reads as tampered. A row
with `revealed = '{}'` (an empty array, which the service never writes: it writes NULL) did; so
did a time before the year 1000 (strftime's unpadded %Y) and would a `revealed` with NULL
elements, several dimensions or another lower bound (the list psycopg parses loses them).

Both sides are computed on real Postgres: rows appended through the chain trigger, then read and
verified as `audit verify` does; and the trigger's hash function called on generated edge values
(empty and non-ASCII strings, arrays of every shape, extreme times and counts), the Python hash
computed from what the verifier reads back.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.own_database import database_of_its_own
from vault_service.adapters.postgres import PostgresAuditLog
from vault_service.adapters.postgres.audit_records import _BYTEA_ARRAY_OID, _ArraySent
from vault_service.bootstrap import open_vault_pool
from vault_service.domain.audit import AuditEvent, array_elements, chain_hash_v2, first_broken_record

_INSERT = (
    "INSERT INTO vault.audit_log (client, client_serial, client_cert_sha256, action, purpose, token_types,"
    " item_count, outcome, revealed) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::bytea[])"
)
_REVEALED_SHAPES = (
    None,
    "{}",
    "{NULL}",
    '{"\\\\x"}',
    '{"\\\\x00ff",NULL,"\\\\x01"}',
    '{{"\\\\x01","\\\\x02"},{"\\\\x03",NULL}}',
    '[0:1]={"\\\\x0a","\\\\x0b"}',
    '[-3:-3][5:6]={{"\\\\x0c","\\\\x0d"}}',
)
"""`revealed` as written: NULL, empty, NULL elements, an empty element, two dimensions, other lower bounds."""


@pytest.fixture(scope="module")
def audit_database(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """A migrated database of the module's own: its log holds the odd rows these tests write."""
    with database_of_its_own(stack_env, "hash_agrees", migrated=True) as env:
        yield env


def test_rows_of_every_revealed_shape_appended_through_the_trigger_verify_intact(
    audit_database: dict[str, str],
) -> None:
    texts = ("", "Zürich €", '😀 "quoted" \\ back\nslash', "plain")
    with psycopg.connect(audit_database["PG_VAULT_DSN"], autocommit=True) as conn:
        for n, revealed in enumerate(_REVEALED_SHAPES):
            text = texts[n % len(texts)]
            conn.execute(_INSERT, (text or "c", text, text, "detokenize", text, text, n - 1, "ok", revealed))
    pool = open_vault_pool(audit_database["PG_VAULT_DSN"], 2)
    try:
        log = PostgresAuditLog(pool)
        log.append(AuditEvent("svc", "detokenize", "ok: 1 revealed", 1, "", "ip", revealed=(b"\x01" * 16,)))
        log.append(AuditEvent("svc", "tokenize", "ok", 0))  # no reveals: the service writes NULL
        records = log.records()
    finally:
        pool.close()

    assert first_broken_record(records) is None
    by_shape = [r.event.revealed for r in records if r.event.action == "detokenize" and r.event.client != "svc"]
    assert by_shape == [(), (), (), (b"",), (b"\x00\xff", b"\x01"), (b"\x01", b"\x02", b"\x03"), (b"\n", b"\x0b"),
                        (b"\x0c", b"\x0d")]  # fmt: skip
    assert records[-2].event.revealed == (b"\x01" * 16,)


_pg_text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12
)  # a PostgreSQL text holds any character but NUL; no lone surrogates in UTF-8
_element = st.one_of(st.none(), st.binary(max_size=6))


@st.composite
def _revealed(draw: st.DrawFn) -> str | None:
    """A bytea[] literal of any shape (or NULL): up to two dimensions, any lower bounds, NULL elements."""
    if draw(st.booleans()):
        return draw(st.sampled_from(_REVEALED_SHAPES))
    rows, cols = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    low = draw(st.lists(st.integers(-5, 5), min_size=2, max_size=2))

    def spelled(value: bytes | None) -> str:
        return "NULL" if value is None else '"\\\\x' + value.hex() + '"'

    cells = [[spelled(draw(_element)) for _ in range(cols)] for _ in range(rows)]
    if draw(st.booleans()):
        return f"[{low[0]}:{low[0] + cols - 1}]={{" + ",".join(cells[0]) + "}"
    body = ",".join("{" + ",".join(row) + "}" for row in cells)
    return f"[{low[0]}:{low[0] + rows - 1}][{low[1]}:{low[1] + cols - 1}]={{{body}}}"


_HASH = "SELECT vault.audit_row_hash(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::bytea[]), %s::bytea[]"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prev=st.binary(min_size=32, max_size=32),
    record_id=st.integers(1, 2**63 - 1),
    at=st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59), timezones=st.just(UTC)),
    fields=st.lists(_pg_text, min_size=7, max_size=7),
    item_count=st.integers(-(2**31), 2**31 - 1),
    revealed=_revealed(),
    punctuation=st.sampled_from(string.punctuation),
)
def test_the_verifier_hashes_every_value_as_the_trigger_does(
    audit_database: dict[str, str],
    prev: bytes,
    record_id: int,
    at: datetime,
    fields: list[str],
    item_count: int,
    revealed: str | None,
    punctuation: str,
) -> None:
    client, serial, digest, action, purpose, token_types, outcome = fields
    purpose += punctuation
    with psycopg.connect(audit_database["PG_ADMIN_DSN"]) as conn:
        cursor = conn.cursor(binary=True)
        cursor.adapters.register_loader(_BYTEA_ARRAY_OID, _ArraySent)  # what the verifier reads, as it reads it
        args = (prev, record_id, at, client, serial, digest, action, purpose, token_types, item_count, outcome)
        row = cursor.execute(_HASH, (*args, revealed, revealed)).fetchone()
    assert row is not None
    database_hash, sent = bytes(row[0]), row[1]
    event = AuditEvent(
        client, action, outcome, item_count, purpose, token_types, serial, digest,
        () if sent is None else array_elements(sent),
    )  # fmt: skip
    assert chain_hash_v2(prev, record_id, at, event, sent) == database_hash
