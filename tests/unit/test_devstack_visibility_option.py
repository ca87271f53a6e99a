"""`devstack up --etl-visibility-timeout-seconds`: the stack's ETL's lease, checked before anything starts, kept.

`make run` names it when it waits for a stopped ETL's messages (tests/unit/test_demo_event_file.py); the stack's
ETL started with it and a lease waited out are in tests/e2e/test_w48_demo_lease_wait.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.cli import _say_kept, main
from devstack.procs import StackError
from devstack.stack import etl_service_env, up
from etl_service.config import DEFAULT_VISIBILITY_SECONDS


@pytest.mark.parametrize("given", ["1", "43201", "2.5", "soon"])
def test_a_lease_the_etl_would_refuse_stops_up_before_anything_starts(
    given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOKENVAULT_STACK_DIR", str(tmp_path / "stack"))
    with pytest.raises(SystemExit) as stopped:
        main(["up", "--etl-visibility-timeout-seconds", given])
    said = capsys.readouterr().err
    assert stopped.value.code == 2 and "--etl-visibility-timeout-seconds" in said and "2 to 43200" in said, said
    assert not (tmp_path / "stack").exists()
    with pytest.raises(StackError, match="visibility timeout"):
        up(tmp_path / "stack", etl_visibility_seconds=int(given) if given.isdigit() else 0)
    assert not (tmp_path / "stack").exists()


def test_the_option_is_ups_own_and_help_says_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["status", "--etl-visibility-timeout-seconds", "10"])
    assert stopped.value.code == 2 and "--etl-visibility-timeout-seconds is an option of `up` only" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--etl-visibility-timeout-seconds SECONDS" in shown and "2 to 43200; default 60" in shown, shown


def test_the_etl_gets_the_lease_the_stack_keeps_and_its_own_default_without_one() -> None:
    env = {name: "x" for name in ("SQS_QUEUE_URL", "SQS_DLQ_URL", "SQS_ENDPOINT_URL", "PG_ETL_DSN")}
    env |= {"TOKENVAULT_GRPC_ADDRESS": "127.0.0.1:1", "TLS_CA_CERT": "ca", "ETL_TLS_CERT": "c", "ETL_TLS_KEY": "k"}
    env |= {"STACK_ETL_METRICS_PORT": "0", "STACK_DIR": "/nonexistent", "VAULT_ADDR": "http://127.0.0.1:1"}
    env |= {"DLQ_SEAL_ROLE_ID": "r", "DLQ_SEAL_SECRET_ID_FILE": "f", "SQS_ETL_ACCESS_KEY_ID": "a"}
    env |= {"SQS_ETL_SECRET_ACCESS_KEY": "s"}
    kept = etl_service_env({**env, "STACK_ETL_VISIBILITY_TIMEOUT_SECONDS": "12"})
    assert kept["ETL_VISIBILITY_TIMEOUT_SECONDS"] == "12"
    assert "ETL_VISIBILITY_TIMEOUT_SECONDS" not in etl_service_env(env)  # a stack started before it was kept


@pytest.mark.parametrize(
    ("asked", "kept", "said"),
    [
        (
            12,
            "60",
            "--etl-visibility-timeout-seconds 12 not applied: the stack's ETL keeps the lease it was started"
            " with (60 s)",
        ),
        (12, None, "(60 s)"),  # a stack started before the lease was kept runs the ETL's default
        (12, "12", ""),
        (None, "60", ""),
    ],
)
def test_up_on_a_running_stack_says_when_the_lease_asked_is_not_the_one_kept(
    asked: int | None, kept: str | None, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _say_kept("--etl-visibility-timeout-seconds", asked, kept, DEFAULT_VISIBILITY_SECONDS, "lease")
    err = capsys.readouterr().err
    assert (said in err and "`make down` first" in err) if said else err == "", err
