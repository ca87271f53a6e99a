"""`dead-letters --token-file`: the DLQ operator's Vault token is read only from a file that is the operator's alone.

Read by plain path, a token file others may read gave the DLQ operator's token (decrypt with the dead-letter
key: every dead-lettered body in clear) to every local account, and one another account owns made the command
open bodies under that account's token. Both are refused now (exit 2, naming the file and the fix) before
OpenBao is asked: a real listener on its address gets nothing. The file `make up` wrote is used as it is.
On the session's embedded stack (real SQS and OpenBao).
"""

from __future__ import annotations

import base64
import os
import pwd
from pathlib import Path

import hvac
import pytest

from etl_service.adapters.transit_sealer import DEAD_LETTER_KEY
from tests.cli.conftest import CliStack
from tests.cli.test_cli_dead_letters import plant_envelope
from tests.integration.dead_letters import run_dead_letters_here
from tests.unit.test_cli_trusted_files import Listener

NOTE = b'{"note": "planted by the token-file test"}'


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another uid takes root")
def test_a_token_file_others_may_read_or_another_account_owns_is_refused_and_the_stacks_own_is_used(
    cli_stack: CliStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    env = {**cli_stack.env, "ETL_QUEUE_URL": cli_stack.env["SQS_QUEUE_URL"]}
    own = Path(env["DLQ_OPERATOR_TOKEN_FILE"])  # as `make up` wrote it
    token = own.read_text().strip()
    root = Path(env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip()
    ciphertext = hvac.Client(url=env["VAULT_ADDR"], token=root).secrets.transit.encrypt_data(
        name=DEAD_LETTER_KEY, plaintext=base64.b64encode(NOTE).decode()
    )["data"]["ciphertext"]
    sealed = plant_envelope(cli_stack, DEAD_LETTER_KEY, ciphertext)
    listener = Listener()  # OpenBao's address for the refused runs: what reaches it is counted
    try:
        shown = run_dead_letters_here(monkeypatch, capsys, env, "show", sealed, "--token-file", str(own))
        assert shown.returncode == 0 and "planted by the token-file test" in shown.stdout, shown.stderr

        directory = tmp_path / "operator"
        directory.mkdir(mode=0o700)
        copy = directory / "token"
        copy.write_text(token + "\n")
        copy.chmod(0o644)  # every local account may read it
        elsewhere = {**env, "VAULT_ADDR": f"http://{listener.address}", "ETL_DLQ_SEAL_VAULT_ADDR": ""}
        refused = run_dead_letters_here(monkeypatch, capsys, elsewhere, "show", sealed, "--token-file", str(copy))
        assert refused.returncode == 2, refused.stderr
        assert f"--token-file {copy} is refused" in refused.stderr and f"`chmod 600 {copy}`" in refused.stderr
        assert token not in refused.stdout + refused.stderr and "planted" not in refused.stdout

        copy.chmod(0o600)
        nobody = pwd.getpwnam("nobody")
        os.chown(copy, nobody.pw_uid, nobody.pw_gid)  # nobody's: it may put its own token there
        refused = run_dead_letters_here(monkeypatch, capsys, elsewhere, "show", sealed, "--token-file", str(copy))
        assert refused.returncode == 2 and f"{copy} is owned by nobody" in refused.stderr, refused.stderr
        assert listener.connections == 0  # OpenBao was asked nothing with either file
    finally:
        listener.close()
        run_dead_letters_here(monkeypatch, capsys, env, "delete", sealed, "--yes")  # the plant leaves the DLQ
