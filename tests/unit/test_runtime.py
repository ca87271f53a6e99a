"""The interpreter settings both services apply once started."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json, sys
before = {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count(), "switch": sys.getswitchinterval()}
from tokenvault_common.runtime import tune_for_throughput
tune_for_throughput()
after = {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count(), "switch": sys.getswitchinterval()}
class Cycle:
    pass
for _ in range(100_000):  # cyclic garbage is still collected, in larger steps
    node = Cycle(); node.self = node
gc.collect(0)
left = sum(isinstance(o, Cycle) for o in gc.get_objects())
print(json.dumps({"before": before, "after": after, "cycles_left": left}))
"""


def test_tuning_raises_gc_thresholds_freezes_startup_objects_and_shortens_the_gil_handover() -> None:
    # A fresh interpreter: the settings are process-wide and must not leak into this test run.
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    probe = json.loads(result.stdout)
    # CPython's own defaults differ between versions (700/10/10 up to 3.12): compare, do not pin.
    assert probe["before"]["threshold"] != probe["after"]["threshold"]
    assert probe["after"]["threshold"] == [50_000, 20, 100]
    assert probe["after"]["frozen"] > probe["before"]["frozen"]
    assert probe["after"]["switch"] == 0.001
    assert probe["cycles_left"] < 50_000
