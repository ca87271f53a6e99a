"""TOKENVAULT_DATABASE_DSN_FILE and ETL_DATABASE_DSN_FILE (review 34, R34-12): exactly one of the DSN or its file.

Both, neither, a file that is missing, empty or holds a DSN that could hand the password to an impostor: the start
stops (exit 2, as every misconfiguration), naming the setting and never quoting the DSN. A good file is read again
for every new connection (tests/integration/test_database_dsn_file.py: the services log in with a rotated login).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from etl_service.config import EtlConfig
from etl_service.entrypoints import cli as etl_cli
from tests.unit.etl_builders import minimal_etl_env
from tests.unit.vault_settings import vault_env
from tokenvault_common.database_dsn import DsnFile, conninfo_now
from tokenvault_common.env import ConfigError
from vault_service import __main__ as vault_main
from vault_service.config import VaultServiceConfig

SECRET = "s3cret-Pa55word"
GOOD = f"postgresql://v-login:{SECRET}@db.example/tokenvault?sslmode=verify-full"
EXPOSED = f"postgresql://v-login:{SECRET}@db.example/tokenvault"  # TCP, nothing keeps the password from an impostor


def _vault(tmp_path: Path, **settings: str) -> dict[str, str]:
    return vault_env(tmp_path, **settings)


def _etl(tmp_path: Path, **settings: str) -> dict[str, str]:
    return {**minimal_etl_env(tmp_path, "https://sqs.eu-west-1.amazonaws.com/1/q"), **settings}


SERVICES = [
    pytest.param("TOKENVAULT_DATABASE_DSN", _vault, VaultServiceConfig.from_env, id="vault"),
    pytest.param("ETL_DATABASE_DSN", _etl, EtlConfig.from_env, id="etl"),
]
Env = Callable[..., dict[str, str]]
Load = Callable[[Mapping[str, str]], Any]


def _refused(load: Load, env: Mapping[str, str]) -> str:
    with pytest.raises(ConfigError) as error:
        load(env)
    return str(error.value)


@pytest.mark.parametrize(("variable", "env_of", "load"), SERVICES)
def test_the_dsn_file_is_read_again_at_each_connection(variable: str, env_of: Env, load: Load, tmp_path: Path) -> None:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(GOOD + "\n")
    config = load(env_of(tmp_path, **{variable: "", f"{variable}_FILE": str(dsn_file)}))
    assert config.database_dsn == "" and isinstance(config.database_conninfo, DsnFile)
    assert conninfo_now(config.database_conninfo) == GOOD
    rotated = GOOD.replace("v-login", "v-next")
    dsn_file.write_text(rotated)  # the agent renders the next lease's login
    assert conninfo_now(config.database_conninfo) == rotated
    assert SECRET not in repr(config)  # its repr shows the file's path, never the DSN nor the environment


@pytest.mark.parametrize(("variable", "env_of", "load"), SERVICES)
def test_the_dsn_alone_is_used_as_before(variable: str, env_of: Env, load: Load, tmp_path: Path) -> None:
    config = load(env_of(tmp_path, **{variable: GOOD}))
    assert config.database_conninfo == GOOD == config.database_dsn and config.database_dsn_file is None


@pytest.mark.parametrize(("variable", "env_of", "load"), SERVICES)
def test_both_or_neither_is_refused(variable: str, env_of: Env, load: Load, tmp_path: Path) -> None:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(GOOD)
    both = _refused(load, env_of(tmp_path, **{variable: GOOD, f"{variable}_FILE": str(dsn_file)}))
    assert f"set {variable} or {variable}_FILE, not both" in both and SECRET not in both
    neither = _refused(load, {k: v for k, v in env_of(tmp_path).items() if k != variable})
    assert f"{variable} is required but not set (or {variable}_FILE" in neither


@pytest.mark.parametrize(("variable", "env_of", "load"), SERVICES)
def test_a_dsn_file_missing_empty_or_exposing_the_password_is_refused(
    variable: str, env_of: Env, load: Load, tmp_path: Path
) -> None:
    dsn_file = tmp_path / "dsn"
    env = env_of(tmp_path, **{variable: "", f"{variable}_FILE": str(dsn_file)})
    assert f"{variable}_FILE points to {dsn_file}, which is not a file" in _refused(load, env)
    dsn_file.write_text(" \n")
    assert f"{variable}_FILE {dsn_file} is empty" in _refused(load, env)
    dsn_file.write_text(EXPOSED)
    exposed = _refused(load, env)
    assert "may reach the database over TCP" in exposed and f"{variable}_FILE" in exposed
    assert SECRET not in exposed and EXPOSED not in exposed


def test_the_vault_exits_2_on_both_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(GOOD)
    for name, value in _vault(
        tmp_path, TOKENVAULT_DATABASE_DSN_FILE=str(dsn_file), TOKENVAULT_DATABASE_DSN=GOOD
    ).items():
        monkeypatch.setenv(name, value)
    assert vault_main.main([]) == 2
    err = capsys.readouterr().err
    assert "not both" in err and SECRET not in err


def test_the_etl_exits_as_on_any_setting_when_its_dsn_file_is_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text("")
    for name, value in _etl(tmp_path, ETL_DATABASE_DSN_FILE=str(dsn_file)).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ETL_DATABASE_DSN")
    assert etl_cli.main(["run"]) == etl_cli.EXIT_CONFIG == 2
    assert "ETL_DATABASE_DSN_FILE" in (err := capfd.readouterr().err) and "is empty" in err
