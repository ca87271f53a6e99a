"""Attack 49, A49-3: a planted row naming a list "signed" by a key version that never was is a row that does not
verify once the keys file is fresh - named, and `--accepting-unverified-rows N` erases anyway.

A47-3 (fixed): one row holding P's token naming a list that does not exist blocked every `erase` of P's values; now
such a row "does not verify", is named, and `--accepting-unverified-rows N` goes on. But a row naming a list whose
signature says `vault:v99:` (a version the keys file lacks) was counted apart, as a stale keys file (walk46, W46-2):
not in what --accepting-unverified-rows confirms, refused (exit 2) "refresh the file" - and a refresh did not help,
v99 never was. The ETL's role may INSERT lists (migration 0068) and rows: two INSERTs. Now a version the file lacks
is a stale file only when a refresh could bring it: newer than the file's newest, on a list signed after the file
was read from OpenBao (and not in the future); otherwise the row does not verify.

Real SQS, the stack's ETL, the vault service, OpenBao and PostgreSQL; the `tokenvault` console script.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.cli.conftest import CliStack
from tests.cli.erase_logins import RUN, erase, load, people, revealed, tokens_of

TAMPERING = "do not verify against the ETL's signature"


@pytest.fixture(autouse=True)
def _rows_removed_after(cli_stack: CliStack) -> Iterator[None]:
    yield
    with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as conn:
        conn.execute("DELETE FROM user_logins WHERE event_id LIKE %s", (f"e3-{RUN}-%",))


def _plant(stack: CliStack, token: str, tag: str, signed_at: str | None = None) -> tuple[str, uuid.UUID]:
    """The ETL's identity's two INSERTs: a list "signed" `vault:v99:`, a row holding `token` naming it."""
    planted, manifest = f"e3-{RUN}-planted-{tag[:8]}", uuid.uuid4()
    signature = "vault:v99:" + base64.b64encode(bytes(64)).decode()
    with psycopg.connect(stack.env["PG_ETL_DSN"]) as etl:
        if signed_at is None:
            etl.execute(
                "INSERT INTO public.user_login_manifests (manifest_id, digests, signature) VALUES (%s, %s, %s)",
                (manifest, bytes(32), signature),
            )
        else:
            etl.execute(
                "INSERT INTO public.user_login_manifests (manifest_id, digests, signature, signed_at)"
                " VALUES (%s, %s, %s, %s)",
                (manifest, bytes(32), signature, signed_at),
            )
        etl.execute(
            "INSERT INTO public.user_logins (user_id, masked_ip, masked_device_id, create_date, event_id, row_manifest)"
            " VALUES ('someone', %s, NULL, NULL, %s, %s)",
            (token, planted, manifest),
        )
    return planted, manifest


def test_a49_3_a_planted_unknown_key_version_is_a_row_that_does_not_verify_once_the_file_is_refreshed(
    cli_stack: CliStack,
) -> None:
    tag = uuid.uuid4().hex
    ip, dev = people(tag)
    person = f"a49-p-{tag[:8]}"
    load(cli_stack, [(person, ip, dev)])
    tokens = tokens_of(cli_stack, person)
    planted, manifest = _plant(cli_stack, tokens[0], tag)
    # Signed after the file was written: a rotation since is possible - refresh, and the refusal names the row.
    code, out, err = erase(cli_stack, *tokens, "--user-id", person)
    print(f"A49-3: erase before the refresh: exit {code}: {err[-700:]}")
    assert code == 2 and "signed with key version v99" in err and "refresh the file" in err, out + err
    assert f"event {planted} (list {manifest})" in err, err
    refresh = cli_stack.as_("security", "login-row-keys", "refresh")
    assert refresh.returncode == 0, refresh.stdout + refresh.stderr
    # Fresh file, still no v99: no refresh brings it - a row that does not verify, named, overridable (A47-3).
    code, out, err = erase(cli_stack, *tokens, "--user-id", person)
    print(f"A49-3: erase after the refresh: exit {code}: {err[-700:]}")
    assert code == 1 and TAMPERING in err and f"event {planted} (list {manifest})" in err, out + err
    assert "--accepting-unverified-rows 1 erases anyway" in err and "refresh the file" not in err, err
    audit = cli_stack.as_("security", "audit", "login-rows", "--token", tokens[0], "-o", "csv")
    assert audit.returncode == 1, audit.stdout + audit.stderr
    assert [x for x in audit.stdout.splitlines() if x.startswith(f"{planted},") and "key version v99" in x], audit
    assert revealed(cli_stack, tokens) == [ip, dev]
    code, out, err = erase(
        cli_stack, *tokens, "--user-id", person, "--accepting-unverified-rows", "1", "--including-other-people", "1"
    )
    print(f"A49-3: erase --accepting-unverified-rows 1 --including-other-people 1: exit {code}: {err[-400:]}")
    assert code == 0 and out.count("erased") == 2, out + err
    assert revealed(cli_stack, tokens) == ["NOT_FOUND", "NOT_FOUND"]


def test_a49_3_a_list_dated_in_the_future_is_no_stale_file(cli_stack: CliStack) -> None:
    """signed_at set ahead (the ETL's role may set it) would stay "newer than the file" after every refresh."""
    tag = uuid.uuid4().hex
    ip, dev = people(tag)
    person = f"a49-f-{tag[:8]}"
    load(cli_stack, [(person, ip, dev)])
    tokens = tokens_of(cli_stack, person)
    planted, manifest = _plant(cli_stack, tokens[0], tag, signed_at="2099-01-01T00:00:00Z")
    code, out, err = erase(cli_stack, *tokens, "--user-id", person, "--accepting-unverified-rows", "0")
    print(f"A49-3: erase of a list dated 2099: exit {code}: {err[-700:]}")
    assert code == 1 and TAMPERING in err and f"event {planted} (list {manifest})" in err, out + err
    assert "--accepting-unverified-rows 0 does not match the count now" in err, err
    code, out, err = erase(
        cli_stack, *tokens, "--user-id", person, "--accepting-unverified-rows", "1", "--including-other-people", "1"
    )
    assert code == 0 and out.count("erased") == 2, out + err
    assert revealed(cli_stack, tokens) == ["NOT_FOUND", "NOT_FOUND"]
