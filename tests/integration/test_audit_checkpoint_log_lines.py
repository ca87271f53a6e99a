"""The vault's own log as the exported copy of its checkpoints: logged at any level, read whatever the owner logs.

R18-3 (review 18): the exported checkpoints are logged whatever the vault's log level.

The Kubernetes deployment sets no checkpoint file: its checkpoints leave the database only as the
vault's `audit checkpoint` log lines, at INFO. With TOKENVAULT_LOG_LEVEL=WARNING they were
dropped, while the upkeep counted them exported and forgot the rows they anchor. The service,
started as a process of its own on a database of its own (the data keys it makes at its first
start are audited rows to anchor), with no checkpoint file, at WARNING.

Retest 17, finding C: the database owner set a role default named `x.head_id`; the vault logs the
names of such defaults at start, and audit-verify refused every copy of that log as holding a line
that looks like a checkpoint but cannot be read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

from devstack.stack import vault_service_env
from tests.integration.audit_attacks import as_owner, own_database
from tests.integration.vault_start import REPO
from vault_service.service.exported_copy import read_exported_copy

__all__ = ["own_database"]  # fixtures used here


def _vault_log(env: dict[str, str], **overrides: str) -> str:
    """What the vault service, run for a few rounds with the stack's settings and `overrides`, logged."""
    settings = {
        **vault_service_env(env),
        "TOKENVAULT_GRPC_ADDRESS": "127.0.0.1:0",
        "TOKENVAULT_METRICS_PORT": "0",
        "TOKENVAULT_AUDIT_CHECKPOINT_SECONDS": "1",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **overrides,
    }
    settings.pop("TOKENVAULT_AUDIT_CHECKPOINT_FILE", None)
    service = subprocess.Popen(
        [sys.executable, "-m", "vault_service"], env=settings, cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    stderr = service.stderr
    assert stderr is not None
    lines: list[str] = []

    def read() -> None:
        for line in stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # Started, its keys made (audited) and anchored: the first checkpoint line (none at all for
        # 15 s is for the test to judge). Then one more round (1 s), with nothing new to anchor.
        deadline = time.monotonic() + 15
        while service.poll() is None and time.monotonic() < deadline:
            if any('"audit_checkpoint"' in line for line in list(lines)):
                time.sleep(1.5)
                break
            time.sleep(0.1)
    finally:
        service.terminate()
        service.wait(timeout=60)
        reader.join(timeout=60)
    return "".join(lines)


def test_checkpoints_are_exported_as_log_lines_at_log_level_warning(own_database: dict[str, str]) -> None:
    logged = _vault_log(own_database, TOKENVAULT_LOG_LEVEL="WARNING")
    records = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
    levels = {r["level"] for r in records}
    checkpoints = [r["audit_checkpoint"] for r in records if "audit_checkpoint" in r]
    assert checkpoints, f"no checkpoint line at WARNING; logged levels {levels}: {logged[-1500:]}"
    assert all(c["head_id"] > 0 and c["signature"].startswith("vault:v") for c in checkpoints)
    others_at_info = [r["message"] for r in records if r["level"] == "INFO" and "audit_checkpoint" not in r]
    assert others_at_info == []  # the level still holds for everything else


def test_a_role_default_named_like_a_checkpoints_key_does_not_make_the_vaults_log_unreadable(
    own_database: dict[str, str], tmp_path: Path
) -> None:
    database = psycopg.conninfo.conninfo_to_dict(own_database["PG_ADMIN_DSN"])["dbname"]
    with as_owner(own_database) as owner:
        owner.execute(f'ALTER ROLE tokenvault_vault IN DATABASE "{database}" SET "x.head_id" = \'1\'')
    copy = tmp_path / "vault_service.log"
    copy.write_text(_vault_log(own_database))
    assert '"x.head_id"' in copy.read_text()  # the vault named the owner's setting in its log
    read = read_exported_copy(copy)
    assert read.checkpoints and read.newest is not None and read.newest.head.head_id > 0
