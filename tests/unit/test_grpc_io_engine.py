"""Every process of the project picks gRPC's I/O engine before gRPC starts (tokenvault_client._grpc_env)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tokenvault_client._grpc_env import GRPC_IO_EXPERIMENTS

# Records GRPC_EXPERIMENTS at the moment `grpc` is first imported, then imports the entry point.
_PROBE = """
import importlib, json, os, sys
seen = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "grpc" and not seen:
            seen.append(os.environ.get("GRPC_EXPERIMENTS"))
        return None
sys.meta_path.insert(0, Watch())
importlib.import_module(sys.argv[1])
print(json.dumps({"at_grpc_import": seen[0] if seen else "never", "grpc": "grpc" in sys.modules}))
"""


def _probe(entry_point: str, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, entry_point], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


@pytest.mark.parametrize(
    "entry_point", ["vault_service.__main__", "bench.vault_bench", "tokenvault_cli.app", "tokenvault_client"]
)
def test_the_io_engine_is_set_before_grpc_is_imported(entry_point: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    assert _probe(entry_point, env) == {"at_grpc_import": GRPC_IO_EXPERIMENTS, "grpc": True}


def test_an_operators_own_setting_is_kept() -> None:
    env = {**os.environ, "GRPC_EXPERIMENTS": "event_engine_client"}
    assert _probe("vault_service.__main__", env) == {"at_grpc_import": "event_engine_client", "grpc": True}
