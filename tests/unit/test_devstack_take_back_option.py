"""`devstack up --etl-take-back-seconds`: the stack's ETL's take-back period, checked before anything starts.

The stack's ETL and what it takes back are in tests/e2e/test_stack_restart.py (a period kept across a
restart), tests/e2e/test_embedded_stack.py (the default, 300 s) and tests/cli (0: never).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.cli import main
from devstack.procs import StackError
from devstack.stack import etl_service_env, up


@pytest.mark.parametrize("given", ["-1", "86401", "nan", "soon"])
def test_a_period_the_etl_would_refuse_stops_up_before_anything_starts(
    given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOKENVAULT_STACK_DIR", str(tmp_path / "stack"))
    with pytest.raises(SystemExit) as stopped:
        main(["up", "--etl-take-back-seconds", given])
    assert stopped.value.code == 2 and "--etl-take-back-seconds" in capsys.readouterr().err
    assert not (tmp_path / "stack").exists()
    with pytest.raises(StackError, match="take-back period"):
        up(tmp_path / "stack", etl_take_back_seconds=float(given) if given != "soon" else -1.0)
    assert not (tmp_path / "stack").exists()


def test_the_option_is_ups_own_and_help_says_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["status", "--etl-take-back-seconds", "0"])
    assert stopped.value.code == 2 and "an option of `up` only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--etl-take-back-seconds SECONDS" in shown and "0: never; default 300" in shown


def test_the_etl_gets_the_period_the_stack_keeps_and_its_own_default_without_one() -> None:
    env = {name: "x" for name in ("SQS_QUEUE_URL", "SQS_DLQ_URL", "SQS_ENDPOINT_URL", "PG_ETL_DSN")}
    env |= {"TOKENVAULT_GRPC_ADDRESS": "127.0.0.1:1", "TLS_CA_CERT": "ca", "ETL_TLS_CERT": "c", "ETL_TLS_KEY": "k"}
    env |= {"STACK_ETL_METRICS_PORT": "0", "STACK_DIR": "/nonexistent", "VAULT_ADDR": "http://127.0.0.1:1"}
    env |= {"DLQ_SEAL_ROLE_ID": "r", "DLQ_SEAL_SECRET_ID_FILE": "f", "SQS_ETL_ACCESS_KEY_ID": "a"}
    env |= {"SQS_ETL_SECRET_ACCESS_KEY": "s"}
    assert etl_service_env({**env, "STACK_ETL_TAKE_BACK_SECONDS": "0"})["ETL_TAKE_BACK_SECONDS"] == "0"
    assert "ETL_TAKE_BACK_SECONDS" not in etl_service_env(env)  # a stack started before it was kept: the default
