"""The check of kept copies before their key goes: its paging and rows the vault never made (review 26)."""

from __future__ import annotations

import argparse
import os
from types import SimpleNamespace
from typing import Any, cast

import pytest

from vault_service.domain.crypto import DataKey, seal
from vault_service.domain.errors import InvalidRequest, InvalidValue
from vault_service.domain.token_types import TokenType
from vault_service.entrypoints.admin_cli import batch_size
from vault_service.service import kept_copies
from vault_service.service.kept_copies import differing_kept_copies
from vault_service.service.ports import KeptCopy, TokenStore
from vault_service.service.rotation import KeyRotation

OLD, NEW = DataKey(1, os.urandom(32)), DataKey(2, os.urandom(32))
IP = TokenType.from_name("ip")


class _KeptCopies:
    """vault.kept_copies over a list, a page of `limit` at a time, as the database pages it."""

    def __init__(self, copies: list[KeptCopy]) -> None:
        self._copies = copies
        self.limits: list[int] = []

    def kept_copies_batch(self, dek_id: int, after_id: int, limit: int) -> tuple[int, list[KeptCopy]]:
        self.limits.append(limit)
        page = self._copies[after_id : after_id + max(limit, 0)]
        return after_id + len(page), page


def _copy(token: str, kept: str, now: str) -> KeptCopy:
    return KeptCopy(token, "ip", seal(OLD, IP, token, kept), NEW.key_id, seal(NEW, IP, token, now))


def _differing(copies: list[KeptCopy]) -> tuple[int, list[int]]:
    store = _KeptCopies(copies)
    count = differing_kept_copies(cast(TokenStore, store), OLD, {OLD.key_id: OLD, NEW.key_id: NEW})
    return count, store.limits


def test_the_check_reads_every_kept_copy_in_pages_of_its_own_whatever_the_job_s_batch_size() -> None:
    copies = [_copy(f"t{n}", "v", "v") for n in range(2500)] + [_copy("t-bad", "v", "garbage")]
    count, limits = _differing(copies)
    assert count == 1
    assert set(limits) == {kept_copies.BATCH} and len(limits) == 4


def test_a_row_of_a_type_the_vault_never_made_does_not_stop_the_check() -> None:
    # The serving role may insert a vault.tokens row of type 'bogus' and re-seal it: its kept copy
    # cannot be opened, so it held nothing to lose; the check must go on to the rows after it.
    bogus = KeptCopy("t-bogus", "bogus", os.urandom(40), NEW.key_id, os.urandom(40))
    assert _differing([bogus])[0] == 0
    assert _differing([bogus, _copy("t1", "v", "v"), _copy("t2", "v", "other")])[0] == 1


class _Audit:
    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def append(self, event: Any) -> None:
        self.outcomes.append(event.outcome)


class _Keys:
    def refresh(self) -> Any:
        return SimpleNamespace(active_encryption_key=NEW, pending_fingerprint_key=NEW)


class _RowThatDoesNotOpen:
    def reseal_batch(self, *args: Any) -> int:
        raise InvalidValue("unknown token type 'bogus'; known: ip, device_id")

    reindex_batch = reseal_batch


@pytest.mark.parametrize("job", ["reencrypt", "reindex"])
def test_a_job_stopped_by_a_row_records_failed_not_an_open_intent_row(job: str) -> None:
    audit = _Audit()
    nothing = cast(Any, None)
    rotation = KeyRotation(
        cast(Any, _Keys()), nothing, nothing, cast(Any, _RowThatDoesNotOpen()), cast(Any, audit), "a"
    )
    with pytest.raises(InvalidValue):
        getattr(rotation, job)("CHG-1")
    assert audit.outcomes == ["started", "failed: unknown token type 'bogus'; known: ip, device_id"]


@pytest.mark.parametrize("batch_size", [0, -5])
def test_a_batch_size_under_one_is_refused_before_any_intent_row(batch_size: int) -> None:
    job = KeyRotation(*(cast(Any, None),) * 5, "vault:alice")
    for run in (job.reencrypt, job.reindex):
        with pytest.raises(InvalidRequest, match="from 1 up"):
            run("CHG-1", batch_size)


def test_the_admin_command_refuses_a_batch_size_out_of_range_before_it_connects() -> None:
    assert batch_size("100") == 100
    for text in ("0", "-1", "1", "99", "100001", "ten"):  # 1: a transaction and an audit row per value (attack 26, F4)
        with pytest.raises(argparse.ArgumentTypeError, match="from 100 to 100000"):
            batch_size(text)
