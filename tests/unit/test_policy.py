"""Policy limits: a mistyped tightening stops the vault loudly, never falls back to the defaults.

attack8 Finding 4: a `*_burst` without its `*_per_second` was dropped without a word (the client
got the default rate and burst) and `detokenize_burst = 5.9` was truncated to 5.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from vault_service.domain.errors import InvalidValue
from vault_service.domain.policy import _LIMIT_KEYS, load_policy, parse_policy
from vault_service.domain.rate_limit import RateLimit

REPO = Path(__file__).resolve().parents[2]
BURST_KEYS = [burst for _, burst in _LIMIT_KEYS.values()]


@pytest.mark.parametrize("burst_key", BURST_KEYS)
def test_a_burst_without_its_rate_is_refused_naming_the_client_and_the_key(burst_key: str) -> None:
    rate_key = burst_key.replace("_burst", "_per_second")
    with pytest.raises(InvalidValue) as refused:
        parse_policy({"clients": {"analyst": {"limits": {burst_key: 5}}}})
    assert "'analyst'" in str(refused.value) and burst_key in str(refused.value) and rate_key in str(refused.value)


@pytest.mark.parametrize("burst_key", BURST_KEYS)
def test_a_burst_without_its_rate_in_the_defaults_is_refused(burst_key: str) -> None:
    with pytest.raises(InvalidValue, match=rf"'defaults'.*{burst_key}"):
        parse_policy({"defaults": {"limits": {burst_key: 10}}, "clients": {"a": {}}})


@pytest.mark.parametrize("burst", [5.9, 5.0, "5", True, 0, -3])
def test_a_burst_that_is_not_a_whole_number_of_at_least_one_is_refused(burst: object) -> None:
    limits = {"detokenize_per_second": 10, "detokenize_burst": burst}
    with pytest.raises(InvalidValue, match=r"'analyst'.*detokenize_burst"):
        parse_policy({"clients": {"analyst": {"limits": limits}}})


@pytest.mark.parametrize("rate", ["10", True, float("inf"), float("nan"), 0, -1.5])
def test_a_rate_that_is_not_a_finite_positive_number_is_refused(rate: object) -> None:
    with pytest.raises(InvalidValue, match=r"'analyst'.*detokenize_per_second"):
        parse_policy({"clients": {"analyst": {"limits": {"detokenize_per_second": rate, "detokenize_burst": 5}}}})


def test_a_rate_alone_or_with_a_whole_burst_still_loads() -> None:
    policy = parse_policy(
        {
            "clients": {
                "paired": {"limits": {"detokenize_per_second": 0.5, "detokenize_burst": 5}},
                "rate-only": {"limits": {"detokenize_per_second": 20}},
                "fraction-only": {"limits": {"erase_per_second": 0.005}},
            }
        }
    )
    assert policy.permissions("paired").limits.detokenize == RateLimit(0.5, 5)
    assert policy.permissions("rate-only").limits.detokenize == RateLimit(20, 20)
    assert policy.permissions("fraction-only").limits.erase == RateLimit(0.005, 1)


def test_a_policy_file_with_a_burst_alone_is_refused_when_loaded(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(
        '[clients.privacy-officer]\nerase = ["ip"]\n\n[clients.privacy-officer.limits]\nerase_burst = 10\n'
    )
    with pytest.raises(InvalidValue, match=r"'privacy-officer'.*erase_burst is set without erase_per_second"):
        load_policy(policy_file)


def _shipped_and_example_policies() -> list[tuple[str, str]]:
    """Every policy file the repository ships (config/, deploy/)."""
    found = [(str(p.relative_to(REPO)), p.read_text()) for p in (REPO / "config").glob("*policy*.toml")]
    found += [(str(p.relative_to(REPO)), p.read_text()) for p in (REPO / "deploy").rglob("*policy*.toml")]
    return found


@pytest.mark.parametrize(("where", "text"), _shipped_and_example_policies())
def test_every_shipped_policy_still_loads(where: str, text: str) -> None:
    parse_policy(tomllib.loads(text))


def test_the_policy_module_example_still_loads() -> None:
    import vault_service.domain.policy as module

    doc = module.__doc__ or ""
    example = doc.split("Policy file (TOML):", 1)[1].split("A client absent", 1)[0]
    toml = "\n".join(re.sub(r"#.*$", "", line[4:]) for line in example.splitlines())
    parse_policy(tomllib.loads(toml))


STARTS_REFUSED = {
    "a burst alone": (
        b"[clients.analyst.detokenize]\nip = 'masked'\n\n[clients.analyst.limits]\ndetokenize_burst = 5\n",
        "cannot start: policy limits for 'analyst': detokenize_burst is set without",
    ),
    "not TOML": (
        b"[clients.analyst.detokenize]\nip 'masked'\n",
        "cannot start: policy file {path} is not valid TOML (Expected '=' after a key",
    ),
    "not UTF-8": (b"[clients.analyst]\n# caf\xe9\n", "cannot start: policy file {path} is not UTF-8 text"),
}


@pytest.mark.parametrize("case", STARTS_REFUSED)
def test_the_vault_with_a_bad_policy_file_does_not_start_and_says_why(tmp_path: Path, case: str) -> None:
    """Refused with a message naming the file and the fault, never a traceback (a file that was
    not TOML, or not UTF-8, stopped the start with one)."""
    content, expected = STARTS_REFUSED[case]
    placeholder = tmp_path / "x.pem"
    placeholder.write_text("x")
    policy_file = tmp_path / "policy.toml"
    policy_file.write_bytes(content)
    env = {
        "PATH": "/usr/bin:/bin",
        "TOKENVAULT_DATABASE_DSN": "postgresql://vault@127.0.0.1:9/tokenvault?require_auth=scram-sha-256",
        "TOKENVAULT_VAULT_ADDR": "http://127.0.0.1:9",
        "TOKENVAULT_VAULT_TOKEN": "dev-only",
        **{f"TOKENVAULT_{name}": str(placeholder) for name in ("TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA")},
        "TOKENVAULT_POLICY_FILE": str(policy_file),
    }
    result = subprocess.run(
        [sys.executable, "-m", "vault_service"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    # Refused on the policy, before contacting Vault (nothing listens on port 9).
    assert expected.format(path=policy_file) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


# attack9 Finding 3: `[defaults]` was not checked - `[defaults.limit]`, or limit keys written
# directly under `[defaults]`, were ignored and the built-in (looser) limits applied.
DEFAULTS_REFUSED = {
    "[defaults.limit] (typo)": ("[defaults.limit]\ndetokenize_per_second = 0.1\ndetokenize_burst = 2\n", "limit"),
    "limit keys directly in [defaults]": (
        "[defaults]\ndetokenize_per_second = 0.1\ndetokenize_burst = 2\n",
        "detokenize_burst, detokenize_per_second",
    ),
    "defaults.limits not a table": ("[defaults]\nlimits = 5\n", "defaults.limits"),
}


@pytest.mark.parametrize("case", DEFAULTS_REFUSED)
def test_defaults_with_anything_but_a_limits_table_is_refused_naming_the_key(case: str) -> None:
    text, named = DEFAULTS_REFUSED[case]
    document = tomllib.loads(text + '[clients.analyst.detokenize]\nip = "plain"\n')
    with pytest.raises(InvalidValue) as refused:
        parse_policy(document)
    assert named in str(refused.value) and "defaults" in str(refused.value)


def test_defaults_that_is_not_a_table_is_refused() -> None:
    with pytest.raises(InvalidValue, match="defaults"):
        parse_policy({"defaults": 5, "clients": {"analyst": {}}})


def test_client_limits_that_are_not_a_table_are_refused_naming_the_client() -> None:
    with pytest.raises(InvalidValue, match="'analyst'"):
        parse_policy(tomllib.loads("[clients.analyst]\nlimits = 5\n"))


def test_defaults_limits_still_apply_to_clients_without_their_own() -> None:
    policy = parse_policy(
        tomllib.loads(
            "[defaults.limits]\ndetokenize_per_second = 0.1\ndetokenize_burst = 2\n"
            '[clients.analyst.detokenize]\nip = "plain"\n'
        )
    )
    assert policy.permissions("analyst").limits.detokenize == RateLimit(0.1, 2)


# attack9 Note 10: one client holding tokenize and a reveal level is a dictionary oracle
# (DESIGN §1b): refused at start unless its table accepts it with `oracle = "accepted"`.
@pytest.mark.parametrize("level", ["plain", "masked"])
def test_a_client_that_may_tokenize_and_see_values_is_refused_naming_it(level: str) -> None:
    text = f'[clients.etl-service]\ntokenize = ["ip", "device_id"]\n[clients.etl-service.detokenize]\nip = "{level}"\n'
    with pytest.raises(InvalidValue) as refused:
        parse_policy(tomllib.loads(text))
    message = str(refused.value)
    assert "'etl-service'" in message and "oracle" in message and "oracle = 'accepted'" in message


def test_tokenize_with_a_reveal_of_another_type_is_refused_too() -> None:
    text = '[clients.x]\ntokenize = ["ip"]\n[clients.x.detokenize]\ndevice_id = "masked"\n'
    with pytest.raises(InvalidValue, match=r"'x'.*device_id"):
        parse_policy(tomllib.loads(text))


def test_tokenize_with_reveal_level_none_only_still_loads() -> None:
    text = '[clients.x]\ntokenize = ["ip"]\n[clients.x.detokenize]\nip = "none"\ndevice_id = "none"\n'
    assert parse_policy(tomllib.loads(text)).permissions("x").tokenize


def test_an_oracle_accepted_explicitly_loads() -> None:
    text = '[clients.lookups]\ntokenize = ["ip"]\noracle = "accepted"\n[clients.lookups.detokenize]\nip = "plain"\n'
    permissions = parse_policy(tomllib.loads(text)).permissions("lookups")
    assert permissions.tokenize and permissions.detokenize


@pytest.mark.parametrize("value", ["yes", True, "Accepted", 1])
def test_an_oracle_value_other_than_accepted_is_refused(value: object) -> None:
    raw = {"tokenize": ["ip"], "detokenize": {"ip": "plain"}, "oracle": value}
    with pytest.raises(InvalidValue, match=r"'lookups'.*oracle"):
        parse_policy({"clients": {"lookups": raw}})
