"""Reading what an ETL started by the embedded stack says in its JSON log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def started_line(log_file: Path) -> dict[str, Any]:
    """The ETL's last "started" record in `log_file` (its settings: mode, batch size, take-back period...)."""
    records: list[dict[str, Any]] = [json.loads(line) for line in log_file.read_text().splitlines() if line[:1] == "{"]
    started = [record for record in records if record.get("message") == "started"]
    assert started, f"no 'started' line in {log_file}"
    return started[-1]
