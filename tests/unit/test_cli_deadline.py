"""`tokenvault --deadline`: a number of seconds above 0 and at most a day, or a usage error (walk 53, W53-1).

`--deadline 0` was taken as the default 30 s without a word; a negative one, `nan`, `inf` or `1e300` ended every
call at once with "DEADLINE_EXCEEDED ...: retry, or raise --deadline" - advice that could not help. The same
value from TOKENVAULT_DEADLINE or a profile's `deadline` is refused alike. No vault is involved: settings only.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from devstack.envfile import write_env_file
from tokenvault_cli.app import cli
from tokenvault_cli.settings import SettingsError, resolve

REFUSED = "deadline must be a number of seconds above 0 and at most 86400"


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    """A stack.env naming a vault nobody listens on (the test never gets that far) and files that are not there."""
    write_env_file(
        tmp_path / "stack.env",
        {"STACK_DIR": str(tmp_path), "TOKENVAULT_GRPC_ADDRESS": "127.0.0.1:9", "TLS_CA_CERT": "/stack/ca.pem"},
    )
    return tmp_path


@pytest.mark.parametrize("given", ["0", "-1", "nan", "inf", "1e300", "86401"])
def test_a_deadline_that_is_not_a_sane_number_of_seconds_is_refused_whichever_source_gives_it(
    stack: Path, given: str
) -> None:
    with pytest.raises(SettingsError, match=REFUSED):
        resolve({"stack_dir": str(stack), "role": "analyst", "deadline": float(given)}, {})
    with pytest.raises(SettingsError, match=REFUSED):  # a profile's deadline, a string
        resolve({"stack_dir": str(stack), "role": "analyst"}, {"deadline": given})


@pytest.mark.parametrize("given", ["0.5", "30", "86400"])
def test_a_deadline_from_half_a_second_to_a_day_is_taken(stack: Path, given: str) -> None:
    assert resolve({"stack_dir": str(stack), "role": "analyst", "deadline": given}, {}).deadline == float(given)
    assert resolve({"stack_dir": str(stack), "role": "analyst"}, {}).deadline is None  # the client's 30 s


@pytest.mark.parametrize("args, env", [(["--deadline", "-1"], {}), ([], {"TOKENVAULT_DEADLINE": "inf"})])
def test_the_command_stops_with_a_usage_error_naming_the_setting(
    stack: Path, args: list[str], env: dict[str, str]
) -> None:
    reveal = ["reveal", "ip_" + "a" * 22, "--purpose", "CASE-1"]
    result = CliRunner().invoke(cli, ["--stack", str(stack), "--as", "analyst", *args, *reveal], env=env)
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert REFUSED in said and "give --deadline (TOKENVAULT_DEADLINE, a profile's deadline) such as 30" in said
    assert "DEADLINE_EXCEEDED" not in said
