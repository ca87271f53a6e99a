"""A signed list is at most one ETL batch (attack 48, A48-2): the migration's CHECK and the ETL's setting agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from etl_service.config import EtlConfig
from tests.unit.etl_builders import minimal_etl_env
from tokenvault_common.env import ConfigError
from tokenvault_common.login_row_signatures import DIGEST_BYTES, MAX_LIST_BYTES_EACH, MAX_ROWS_PER_LIST

MIGRATION = Path(__file__).resolve().parents[2] / "migrations" / "0071_user_login_manifests_one_batch_each.sql"


def test_the_migrations_check_is_one_batch_of_digests() -> None:
    (bound,) = re.findall(r"CHECK \(length\(digests\) <= (\d+)\)", MIGRATION.read_text())
    assert int(bound) == MAX_LIST_BYTES_EACH == MAX_ROWS_PER_LIST * DIGEST_BYTES


def test_the_etl_takes_no_batch_larger_than_a_list_may_be(tmp_path: Path) -> None:
    env = minimal_etl_env(tmp_path, "http://q/1/q")
    assert EtlConfig.from_env({**env, "ETL_BATCH_SIZE": str(MAX_ROWS_PER_LIST)}).batch_size == MAX_ROWS_PER_LIST
    with pytest.raises(ConfigError, match="ETL_BATCH_SIZE"):
        EtlConfig.from_env({**env, "ETL_BATCH_SIZE": str(MAX_ROWS_PER_LIST + 1)})
