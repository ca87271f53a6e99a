"""`python -m etl_service --help` documents every setting the ETL reads."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_help_names_every_environment_variable_the_config_reads_and_the_exit_codes() -> None:
    source = (REPO / "etl_service" / "config.py").read_text()
    read = set(re.findall(r'read\.\w+\("([A-Z_]+)"', source)) | set(re.findall(r'env\.get\("([A-Z_]+)"', source))
    assert len(read) > 20
    result = subprocess.run(
        [sys.executable, "-m", "etl_service", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    missing = sorted(name for name in read if name not in result.stdout)
    assert missing == []
    assert "exit status:" in result.stdout and "dead-letters" in result.stdout
