"""`KeyCommands`: authorized first, every refusal recorded before any session, the operator's token used once.

A refused call (not the command's certificate, a reason the log may not keep, a version below 1,
a token Vault refuses) opens no session, so no intent row and no work; a reason refused before
the token is even shown to Vault. The retire's rows are written as the certificate and the
token's Vault identity, and the token reaches only `operator_kek`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from vault_service.domain.errors import InvalidRequest, PermissionDenied, RateLimited, VaultError
from vault_service.domain.identity import Caller
from vault_service.domain.policy import DEFAULT_KEY_STATUS, DEFAULT_KEY_TOKEN_REFUSALS, parse_policy
from vault_service.domain.rate_limit import CertificateBuckets, RateLimit
from vault_service.service.key_commands import KeyCommands, OperatorAccess
from vault_service.service.ports import KekVersions
from vault_service.service.rotation_status import RotationStatus

TEAM = Caller("security-team", "1f", "ab" * 32)
TOKEN = "hvs.operator-token-under-test"


class FakeKek:
    """The KEK's config as the operator's token reaches it."""

    name = "tokenvault"

    def versions(self) -> KekVersions:
        return KekVersions(3, 1, 1)

    def set_minimums(self, min_decryption: int, min_encryption: int) -> None:
        raise AssertionError("the fake rotation writes nothing")


class FakeRotation:
    """Records what it was asked to do."""

    def __init__(self) -> None:
        self.done: list[tuple[Any, ...]] = []

    def rewrap(self, purpose: str) -> int:
        self.done.append(("rewrap", purpose))
        return 2

    def retire_kek_versions(self, below: int, purpose: str, kek: FakeKek) -> int:
        self.done.append(("retire", below, purpose, kek.name))
        return below


class Recorder:
    """The fakes of KeyCommands' collaborators, and what each was given."""

    def __init__(self, allowed: bool = True, token_refused: bool = False) -> None:
        self.allowed = allowed
        self.token_refused = token_refused
        self.sessions: list[Caller] = []
        self.refusals: list[tuple[str, str]] = []
        self.tokens: list[str] = []
        self.status_reads = 0
        self.rotation = FakeRotation()

    def authorize(self, caller: Caller, command: str) -> None:
        if not self.allowed:
            self.refusals.append((command, "PermissionDenied"))
            raise PermissionDenied(f"client {caller.name!r} may not run the key job {command}")

    @contextmanager
    def session(self, caller: Caller) -> Iterator[Any]:
        self.sessions.append(caller)
        yield self.rotation

    def refused(self, caller: Caller, command: str, error: VaultError) -> None:
        self.refusals.append((command, type(error).__name__))

    def read_status(self) -> RotationStatus:
        """`status`, read on the serving stores (service/key_status.py), without a session."""
        self.status_reads += 1
        return RotationStatus(kek_latest_version=3, keys=[], rows_to_reencrypt=0, rows_to_reindex=0)

    def operator_kek(self, token: str) -> OperatorAccess:
        self.tokens.append(token)
        if self.token_refused:
            raise PermissionDenied("your Vault token is refused: it has none of the policies tokenvault-security")
        return OperatorAccess("vault:alice accessor=acc1", FakeKek())

    def commands(self) -> KeyCommands:
        return KeyCommands(self.authorize, self.session, self.refused, self.operator_kek, read_status=self.read_status)


def test_a_change_runs_in_a_session_audited_as_the_certificate() -> None:
    fakes = Recorder()

    assert fakes.commands().rewrap(TEAM, "CHG-1") == 2

    assert fakes.sessions == [TEAM] and fakes.rotation.done == [("rewrap", "CHG-1")]


@pytest.mark.parametrize(
    ("fakes", "below", "reason", "refusal"),
    [
        (Recorder(allowed=False), 3, "CHG-2", "PermissionDenied"),
        (Recorder(), 3, "user 10.0.0.1 asked", "InvalidRequest"),
        (Recorder(), 0, "CHG-2", "InvalidRequest"),
        (Recorder(token_refused=True), 3, "CHG-2", "PermissionDenied"),
    ],
)
def test_a_refused_retire_is_recorded_and_opens_no_session(
    fakes: Recorder, below: int, reason: str, refusal: str
) -> None:
    with pytest.raises((PermissionDenied, InvalidRequest)) as refused:
        fakes.commands().retire_kek_versions(TEAM, below, reason, TOKEN)

    assert fakes.refusals == [("retire-kek-versions", refusal)]
    assert fakes.sessions == [] and fakes.rotation.done == []  # no intent row, no work
    assert TOKEN not in str(refused.value)
    if refusal == "InvalidRequest":
        assert fakes.tokens == []  # refused before the token is shown to Vault


def test_a_retire_names_the_certificate_and_the_vault_identity_and_uses_the_token_once() -> None:
    fakes = Recorder()

    done = fakes.commands().retire_kek_versions(TEAM, 3, "CHG-3", TOKEN)

    assert (done.kek_name, done.below) == ("tokenvault", 3)
    assert fakes.tokens == [TOKEN]
    assert fakes.sessions == [Caller("security-team with vault:alice accessor=acc1", TEAM.serial, TEAM.cert_sha256)]
    assert fakes.rotation.done == [("retire", 3, "CHG-3", "tokenvault")]


@pytest.mark.parametrize(
    "token",
    [
        "hvs.FAKE\u4e00tail",  # non-Latin-1: an encoding error in http.client (attack 28, F2)
        "hvs.FAKE\r\nX-Injected: 1",  # a header line of its own
        "s.CAESI abcdef",
        "s.CAESIabcdef\n",
        "abc\x00def",
        "s." + "A" * 4095,
    ],
)
def test_a_token_that_is_no_vault_token_is_refused_on_the_record_before_vault_is_asked(token: str) -> None:
    fakes = Recorder()

    with pytest.raises(InvalidRequest) as refused:
        fakes.commands().retire_kek_versions(TEAM, 3, "CHG-4", token)

    assert "the Vault token sent is not one" in str(refused.value) and token.strip() not in str(refused.value)
    assert fakes.refusals == [("retire-kek-versions", "InvalidRequest")]
    assert fakes.tokens == [] and fakes.sessions == []


@pytest.mark.parametrize(
    "token",
    ["s.CAESICaie3Dm0Hx001QuMabo", "hvs." + "x1Y" * 30, "b." + "AAEAA" * 60, "r.abc", "root", "s." + "a" * 4094],
)
def test_tokens_as_openbao_and_vault_issue_them_reach_vault(token: str) -> None:
    fakes = Recorder()

    fakes.commands().retire_kek_versions(TEAM, 3, "CHG-5", token)

    assert fakes.tokens == [token]


class Spent:
    """A budget with nothing left."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, caller: Caller, budget: str) -> None:
        self.asked.append(budget)
        raise RateLimited("client 'security-team' may have this vault run 20 key change(s) ...", retry_after=2.0)


def test_a_command_over_the_budget_is_refused_on_the_record_before_any_session_or_vault_call() -> None:
    fakes, spent = Recorder(), Spent()
    commands = KeyCommands(
        fakes.authorize, fakes.session, fakes.refused, fakes.operator_kek, read_status=fakes.read_status, budget=spent
    )

    for call in (
        lambda: commands.status(TEAM),
        lambda: commands.rewrap(TEAM, "CHG-6"),
        lambda: commands.retire_kek_versions(TEAM, 3, "CHG-6", TOKEN),
    ):
        with pytest.raises(RateLimited):
            call()

    assert fakes.refusals == [
        ("status", "RateLimited"),
        ("rewrap", "RateLimited"),
        ("retire-kek-versions", "RateLimited"),
    ]
    assert fakes.sessions == [] and fakes.tokens == [] and fakes.status_reads == 0
    assert spent.asked == ["key_status", "key_commands", "key_token_refusals"]
    with pytest.raises(InvalidRequest):  # a call refused by its checks spends nothing
        commands.rewrap(TEAM, "user 10.0.0.1 asked")
    assert len(spent.asked) == 3


class Budgets:
    """Budgets per kind (key_status, key_commands, key_token_refusals): how many are left, what was taken."""

    def __init__(self, **left: int) -> None:
        self.left = {"key_status": 100, "key_commands": 100, "key_token_refusals": 100, **left}
        self.moves: list[str] = []

    def take(self, caller: Caller, budget: str) -> None:
        if self.left[budget] < 1:
            self.moves.append(f"refused {budget}")
            raise RateLimited(f"no {budget} left", retry_after=2.0)
        self.left[budget] -= 1
        self.moves.append(f"take {budget}")

    def give_back(self, caller: Caller, budget: str) -> None:
        self.left[budget] += 1
        self.moves.append(f"give back {budget}")


def _metered(fakes: Recorder, budgets: Budgets) -> KeyCommands:
    return KeyCommands(
        fakes.authorize,
        fakes.session,
        fakes.refused,
        fakes.operator_kek,
        read_status=fakes.read_status,
        budget=budgets.take,
        give_back=budgets.give_back,
    )


def test_status_spends_a_budget_of_its_own_and_a_spent_one_refuses_no_change() -> None:
    """Review 33, R33-4: status and the changes shared one bucket; status polling refused the team's rotations."""
    fakes, budgets = Recorder(), Budgets(key_status=0)
    commands = _metered(fakes, budgets)

    with pytest.raises(RateLimited):
        commands.status(TEAM)
    assert commands.rewrap(TEAM, "CHG-7") == 2
    assert commands.retire_kek_versions(TEAM, 3, "CHG-7", TOKEN).below == 3

    assert fakes.refusals == [("status", "RateLimited")] and fakes.status_reads == 0
    assert budgets.left["key_commands"] == 98 and budgets.left["key_token_refusals"] == 100


def test_a_retire_spends_the_changes_budget_only_once_vault_accepted_the_token() -> None:
    """Review 33, R33-4: a well-formed token Vault refuses spent the changes' budget, before Vault was asked."""
    fakes = Recorder(token_refused=True)
    budgets = Budgets()
    commands = _metered(fakes, budgets)

    for _ in range(3):
        with pytest.raises(PermissionDenied):
            commands.retire_kek_versions(TEAM, 3, "CHG-8", "s.BogusButWellFormed")

    assert budgets.moves == ["take key_token_refusals"] * 3 and budgets.left["key_commands"] == 100
    fakes.token_refused = False
    budgets.moves.clear()
    commands.retire_kek_versions(TEAM, 3, "CHG-8", TOKEN)
    assert budgets.moves == ["take key_token_refusals", "take key_commands", "give back key_token_refusals"]
    assert budgets.left["key_token_refusals"] == 97  # only the refused tokens counted


def test_no_token_is_looked_up_once_the_refused_tokens_budget_is_spent() -> None:
    fakes, budgets = Recorder(token_refused=True), Budgets(key_token_refusals=1)
    commands = _metered(fakes, budgets)
    with pytest.raises(PermissionDenied):
        commands.retire_kek_versions(TEAM, 3, "CHG-9", "s.BogusButWellFormed")
    with pytest.raises(RateLimited):
        commands.retire_kek_versions(TEAM, 3, "CHG-9", "s.BogusButWellFormed")

    assert fakes.tokens == ["s.BogusButWellFormed"]  # the second never reached Vault
    assert fakes.refusals == [("retire-kek-versions", "PermissionDenied"), ("retire-kek-versions", "RateLimited")]


def test_a_retire_over_the_changes_budget_keeps_its_lookup_counted_and_opens_no_session() -> None:
    fakes, budgets = Recorder(), Budgets(key_commands=0)
    commands = _metered(fakes, budgets)
    with pytest.raises(RateLimited):
        commands.retire_kek_versions(TEAM, 3, "CHG-10", TOKEN)
    assert fakes.sessions == [] and fakes.refusals == [("retire-kek-versions", "RateLimited")]
    assert budgets.left["key_token_refusals"] == 99  # the lookup it caused stays counted


def test_the_budgets_are_kept_per_certificate_and_a_policy_naming_key_commands_only_still_loads() -> None:
    """Review 33, R33-4: per certificate (CN and serial); the policies written before keep their meaning (changes)."""
    now = [0.0]
    buckets = CertificateBuckets({"security-team": RateLimit(0.5, 2)}, RateLimit(1, 1), clock=lambda: now[0])
    assert buckets.take("security-team", "1f").seconds == 0 and buckets.take("security-team", "1f").seconds == 0
    assert buckets.take("security-team", "1f").seconds == pytest.approx(2.0)  # one every 2 s
    assert buckets.take("security-team", "2a").seconds == 0  # another certificate of the team: a bucket of its own
    buckets.give_back("security-team", "1f")
    assert buckets.take("security-team", "1f").seconds == 0

    before = parse_policy(
        {
            "clients": {
                "security-team": {
                    "key_jobs": ["status", "rewrap"],
                    "limits": {"key_commands_per_second": 0.5, "key_commands_burst": 20},
                }
            }
        }
    )
    limits = before.permissions("security-team").limits
    assert limits.key_commands == RateLimit(0.5, 20)
    assert limits.key_status == DEFAULT_KEY_STATUS and limits.key_token_refusals == DEFAULT_KEY_TOKEN_REFUSALS
