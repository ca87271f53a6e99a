"""Every service module is classified for the layering contracts (review 21, R21-2).

The import-linter contracts in pyproject.toml forbid adapters the service modules that drive the
work, by name: a module added to `service/` later would be allowed to adapters by default. Here
each module of each service package must be either in that forbidden list or in PORTS_AND_VALUES,
the modules adapters may use; a new one fails until someone decides which, and a name left in the
list after its module moved fails too.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PORTS_AND_VALUES = {
    "etl_service.service": {"ports", "outcomes", "own_dead_letters", "returned_letters", "sealing"},
    "vault_service.service": {"ports", "checkpoint_ports"},
}
"""What adapters may import of each service package: its ports and the values they carry."""


def _forbidden_to_adapters() -> dict[str, set[str]]:
    """Per service package, the modules the '<service>.adapters' forbidden contract names."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    forbidden: dict[str, set[str]] = {}
    for contract in contracts:
        sources = contract.get("source_modules", [])
        if contract["type"] == "forbidden" and len(sources) == 1 and sources[0].endswith(".adapters"):
            package = sources[0].removesuffix(".adapters") + ".service"
            forbidden[package] = {name.removeprefix(package + ".") for name in contract["forbidden_modules"]}
    return forbidden


@pytest.mark.parametrize("package", sorted(PORTS_AND_VALUES))
def test_every_service_module_is_forbidden_to_adapters_or_a_port_or_value(package: str) -> None:
    modules = {path.stem for path in (ROOT / package.replace(".", "/")).glob("*.py") if path.stem != "__init__"}
    forbidden = _forbidden_to_adapters()[package]
    unclassified = modules - forbidden - PORTS_AND_VALUES[package]
    assert not unclassified, f"add {sorted(unclassified)} to pyproject's adapters contract or to PORTS_AND_VALUES"
    assert not forbidden & PORTS_AND_VALUES[package], "a module cannot be both forbidden and a port"
    stale = (forbidden | PORTS_AND_VALUES[package]) - modules
    assert not stale, f"no module {sorted(stale)} in {package} any more"
