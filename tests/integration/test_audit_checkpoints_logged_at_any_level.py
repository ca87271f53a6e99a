"""The vault's exported checkpoints are logged whatever its log level (review 18, R18-3).

The Kubernetes deployment sets no checkpoint file: its checkpoints leave the database only as the
vault's `audit checkpoint` log lines, at INFO. With TOKENVAULT_LOG_LEVEL=WARNING they were
dropped, while the upkeep counted them exported and forgot the rows they anchor. The service,
started as a process of its own on a database of its own (the data keys it makes at its first
start are audited rows to anchor), with no checkpoint file, at WARNING.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from devstack.stack import vault_service_env
from tests.integration.audit_attacks import own_database
from tests.integration.vault_start import REPO

__all__ = ["own_database"]  # fixtures used here


def test_checkpoints_are_exported_as_log_lines_at_log_level_warning(own_database: dict[str, str]) -> None:
    env = {
        **vault_service_env(own_database),
        "TOKENVAULT_LOG_LEVEL": "WARNING",
        "TOKENVAULT_GRPC_ADDRESS": "127.0.0.1:0",
        "TOKENVAULT_METRICS_PORT": "0",
        "TOKENVAULT_AUDIT_CHECKPOINT_SECONDS": "1",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    env.pop("TOKENVAULT_AUDIT_CHECKPOINT_FILE", None)
    service = subprocess.Popen(
        [sys.executable, "-m", "vault_service"], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(8)  # started, its keys made (audited), a few rounds run
    finally:
        service.terminate()
        _, logged = service.communicate(timeout=60)
    records = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
    levels = {r["level"] for r in records}
    checkpoints = [r["audit_checkpoint"] for r in records if "audit_checkpoint" in r]
    assert checkpoints, f"no checkpoint line at WARNING; logged levels {levels}: {logged[-1500:]}"
    assert all(c["head_id"] > 0 and c["signature"].startswith("vault:v") for c in checkpoints)
    others_at_info = [r["message"] for r in records if r["level"] == "INFO" and "audit_checkpoint" not in r]
    assert others_at_info == []  # the level still holds for everything else
