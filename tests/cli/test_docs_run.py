"""The README's command sections and the key-rotation runbook, run as written on the embedded stack.

Every fenced block whose info string is exactly `sh` is run (blocks for compose are marked
`sh compose`); token literals in them are replaced by real tokens of the same type, each
literal by a fresh one, so erasing one in the docs erases nothing another test relies on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import hvac
import psycopg

from tests.cli.conftest import REPO, CliStack
from tests.cli.erase_logins import RUN, load
from tokenvault_client import ClientIdentity, TokenType, VaultClient, type_of_token

PERSON = "u-example-118"
"""The README's erasure names this person (`--user-id u-example-118`)."""
TOKEN_LITERAL = re.compile(r"\b(?:ip|dev)_[A-Za-z0-9_-]{22}\b")
BLOCK = re.compile(r"^```([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def sh_blocks(markdown: str) -> list[str]:
    """The bodies of the ```sh blocks, in order."""
    return [body for info, body in BLOCK.findall(markdown) if info.strip() == "sh"]


AS_OPERATOR = 'BAO_TOKEN="$(cat "$VAULT_ROOT_TOKEN_FILE")"\n'
"""Prefix of a ```sh operators block in a subshell: Vault's operators' token (the stack's root token)."""


def runbook_blocks(markdown: str, sections: tuple[str, ...] = ()) -> list[str]:
    """The runbook's ```sh blocks and its ```sh operators blocks (in a subshell with the root token), in order.

    With `sections` (heading prefixes such as "## 1."), only the blocks under those headings.
    """
    if sections:
        parts = re.split(r"^(?=## )", markdown, flags=re.MULTILINE)
        markdown = "".join(p for p in parts if p.startswith(sections))
    blocks = []
    for info, body in BLOCK.findall(markdown):
        if info.strip() == "sh":
            blocks.append(body)
        elif info.strip() == "sh operators":
            blocks.append(f"(\n{AS_OPERATOR}{body})\n")
    return blocks


def readme_command_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## The `tokenvault` command")
    return text[start : text.index("\n## ", start + 1)]


def fresh_values(token_type: TokenType, count: int) -> list[str]:
    n = uuid.uuid4().int
    if token_type is TokenType.IP:
        return [f"172.{16 + n % 16}.{(n >> 8) % 256}.{i + 1}" for i in range(count)]
    return [f"{(n + i) % 900 + 100}-{(n >> 12) % 90 + 10}-{(n >> 20) % 9000 + 1000}" for i in range(count)]


def with_real_tokens(script: str, stack: CliStack) -> tuple[str, dict[str, tuple[str, str]]]:
    """`script` with each token literal replaced; literal -> (real token, its value)."""
    literals = sorted(set(TOKEN_LITERAL.findall(script)))
    env = stack.env
    identity = ClientIdentity(
        Path(env["TLS_CA_CERT"]), Path(env["ETL_TLS_CERT"]), Path(env["ETL_TLS_KEY"]), "localhost"
    )
    replaced: dict[str, tuple[str, str]] = {}
    with VaultClient.connect(env["TOKENVAULT_GRPC_ADDRESS"], identity) as etl:
        for literal in literals:
            token_type = type_of_token(literal)
            assert token_type is not None, literal
            (value,) = fresh_values(token_type, 1)
            (token,) = etl.tokenize([(token_type, value)])
            assert isinstance(token, str)
            replaced[literal] = (token, value)
    for literal, (token, _) in replaced.items():
        script = script.replace(literal, token)
    return script, replaced


def run_script(stack: CliStack, script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`script` in bash, in a directory where `.stack` is the test's stack and `.venv` the project's."""
    (tmp_path / ".stack").symlink_to(stack.state_dir)
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "TOKENVAULT_", "VIRTUAL_ENV"))}
    clean["PATH"] = ":".join(p for p in clean["PATH"].split(":") if not p.startswith(str(REPO / ".venv")))
    return subprocess.run(
        ["bash", "-c", "set -exo pipefail\n" + script],
        cwd=tmp_path,
        env={**clean, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_the_readme_command_sections_run_as_written(cli_stack: CliStack, tmp_path: Path) -> None:
    blocks = sh_blocks(readme_command_section())
    assert len(blocks) >= 5 and any("--query" in b for b in blocks) and any(" erase " in b for b in blocks)
    script, tokens = with_real_tokens("\n".join(blocks), cli_stack)
    # The officer erases the tokens of the person's own row (--user-id u-example-118): the ETL loads that row, signed
    # (attack 47, A47-2: a token no verified row of the person holds is refused; attack 50, A50-1: so is an erasure
    # leaving a token of the person's verified rows out).
    person_row = (PERSON, tokens["ip_ExampleTokenToErase002"][1], tokens["dev_ExampleDeviceToken0002"][1])
    load(cli_stack, [person_row])
    try:
        done = run_script(cli_stack, script, tmp_path)
    finally:
        with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"]) as conn:
            conn.execute("DELETE FROM user_logins WHERE user_id = %s AND event_id LIKE %s", (PERSON, f"e3-{RUN}-%"))
    assert done.returncode == 0, done.stderr[-3000:]
    revealed = tokens["ip_ExampleTokenToReveal01"][1]
    assert revealed in done.stdout  # by tokenvault and by buf curl
    assert done.stdout.count(revealed) >= 2 and '"REVEAL_PLAIN"' in done.stdout
    assert "***-**-" + tokens["dev_ExampleDeviceToken0001"][1][-4:] in done.stdout
    assert "erased" in done.stdout and "audit log intact" in done.stdout
    assert "Next step of this erasure, for the DLQ operator" in done.stderr  # named by `tokenvault erase`
    assert "would be deleted (dry run" in done.stdout and "holding the person's values, deleted:" in done.stdout
    assert "1 reveal(s) and 0 erasure(s) of this token" in done.stdout  # the analyst's reveal (buf curl comes after)


def kek_latest_version(stack: CliStack) -> int:
    """The KEK's latest version now, read with the stack's root token."""
    vault = hvac.Client(url=stack.env["VAULT_ADDR"], token=Path(stack.env["VAULT_ROOT_TOKEN_FILE"]).read_text().strip())
    return int(vault.secrets.transit.read_key(name="tokenvault")["data"]["latest_version"])


def test_the_key_rotation_runbook_runs_as_written(cli_stack: CliStack, tmp_path: Path) -> None:
    """The whole runbook, Vault's operators' trim included, then its KEK steps (1 and 3) a second time.

    From the second cycle on the KEK has a min_encryption_version, which made the runbook's
    step 3 (min_decryption_version alone) a 400 and the trim after it too (attack 24, F4).
    """
    runbook = (REPO / "docs" / "key-rotation.md").read_text()
    script = "\n".join(runbook_blocks(runbook) + runbook_blocks(runbook, ("## 1.", "## 3.")))
    for step in ("rotate-encryption-key", "reencrypt", "rotate-fingerprint-key", "reindex", "rewrap", "/trim"):
        assert step in script
    script += 'bao read -format=json transit/keys/tokenvault > "$PWD/kek.json"\n'
    first = kek_latest_version(cli_stack)  # other tests of the session may have rotated the KEK already
    script, tokens = with_real_tokens(script, cli_stack)
    done = run_script(cli_stack, script, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "rewrapped" in out and "re-encrypted" in out and "re-indexed" in out and "audit log intact" in out
    assert "of tokenvault-login-rows (before: v1" in out  # step 8: the row-signing key rotated, its keys file refreshed
    assert "; do not verify: 0; " in done.stderr  # step 9: audit login-rows checked today's rows
    fingerprints_left = re.findall(r"fingerprints to re-index\s*: (\d+)", out)
    assert int(fingerprints_left[2]) > 0  # status counted the re-index work before reindex ran (step 4)
    safe = [str(first + 1), str(first + 1), str(first + 2)]  # steps 3, 4; 3 again
    assert re.findall(r"safe min_decryption_version\s*: (\d+)", out)[1:] == safe
    assert out.count("min_encryption_version raised to") == 2  # step 3's retire-kek-versions, both cycles
    kek = json.loads((tmp_path / "kek.json").read_text())["data"]
    last = first + 2
    assert list(kek["keys"]) == [str(last)] and kek["min_decryption_version"] == kek["min_available_version"] == last
    assert kek["min_encryption_version"] == last
    assert '"erased": true' in out and out.count("erased") >= 2  # by tokenvault and by buf curl
    assert "0 reveal(s) and 1 erasure(s) of this token" in out  # nobody revealed the erased token; it was erased
    status = cli_stack.as_("security", "status")
    assert "values to re-encrypt          : 0" in status.stdout and "fingerprints to re-index      : 0" in status.stdout
    gone = cli_stack.as_("fraud-investigator", "reveal", tokens["ip_ExampleTokenToErase001"][0], "-p", "CHECK-1")
    assert gone.returncode == 1 and "NOT_FOUND" in gone.stdout
