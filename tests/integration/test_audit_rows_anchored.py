"""Each audit row the vault appended is anchored outside the database, not only the chain's head.

Insider round 15, finding 1: the database owner renames vault.audit_log and puts a view of that
name in its place, whose INSTEAD OF trigger keeps the colluding client's rows out of the chain
(a "ghost" table) and shows them only to the presence check's query. The reveals were served,
no row was chained, and audit-verify with the exported checkpoints reported the log intact.

Guarantee (DESIGN §1b, docs/threat-model.md "Insider: the database owner"): the audit trail is
anchored outside Postgres, so such reveals are named by audit-verify with the exported copy.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tests.conftest import running_vault, stack_identity
from tests.integration import audit_attacks as attack
from tests.integration.audit_attacks import CHAINED_GHOST_HASH, Anchored, Sabotage, anchored, ghost_view, own_database
from tokenvault_client import VaultClient, VaultClientError

__all__ = ["anchored", "own_database"]  # fixtures used here, shared by the audit attack tests


def _ghost_view(chained_hash: bool) -> Sabotage:
    """The attack's plant (report 15, finding 1) for the analyst's reveals; with `chained_hash`, each ghost row
    carries the hash the chain trigger would have given it (so the append's returned row looks chained)."""
    row_hash = CHAINED_GHOST_HASH if chained_hash else "NEW.prev_hash := '\\x00'; NEW.row_hash := '\\x00';"
    return ghost_view("NEW.client = 'analyst' AND NEW.action = 'detokenize'", row_hash)


def _rows_missing_counted() -> float:
    return REGISTRY.get_sample_value("tokenvault_audit_rows_missing_total") or 0.0


def _reveal_through_the_ghost_view(
    env: dict[str, str], anchored: Anchored, chained_hash: bool
) -> tuple[int, list[int]]:
    """Three reveals by the analyst with the ghost view in place: values revealed, and the ghost rows' ids."""
    vault, _ = anchored
    token = attack.anchored_token(env, vault)
    sabotage = _ghost_view(chained_hash)
    with attack.planted(env, sabotage):
        revealed = attack.count_revealed(env, vault, token, [f"UNSEEN-{n}" for n in range(3)])
        with attack.as_owner(env) as conn:
            ghosts = [int(r[0]) for r in conn.execute("SELECT id FROM vault.audit_ghosts ORDER BY id").fetchall()]
        time.sleep(2.5)  # two checkpoint rounds with the plant in place (the ghosts' ids beyond the chain's head)
    attack.tokenize_fresh_ip(env, vault)  # a later call: the chain grows past the ghosts' ids
    return revealed, ghosts


def test_reveals_whose_audit_rows_a_view_keeps_out_of_the_chain_are_named_by_audit_verify(
    own_database: dict[str, str], anchored: Anchored, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ghost rows carry the hash the chain trigger would have given them, so the append's
    # returned rows look chained; the presence check is shown them; only the chain lacks them.
    vault, exported = anchored
    counted = _rows_missing_counted()
    revealed, ghosts = _reveal_through_the_ghost_view(own_database, anchored, chained_hash=True)
    vault.wait_for_checkpoint()
    assert revealed == 3 and len(ghosts) == 3, (revealed, ghosts)  # the plant worked as in the report

    report = attack.audit_verify(vault, exported)
    assert report.finding is not None, (
        f"3 values were revealed with their audit rows kept out of the chain (ids {ghosts}), and audit-verify"
        f" with the exported checkpoints reports the log intact ({report.rows} rows, {report.checkpoints} checkpoints)"
    )
    assert report.finding.first_row == ghosts[0]
    assert all(str(i) in report.finding.reason for i in ghosts), report.finding.reason
    code, printed = attack.run_audit_verify(own_database, exported, monkeypatch)
    assert code != 0 and all(str(i) in printed for i in ghosts), printed
    assert _rows_missing_counted() - counted >= 3
    named = [json.loads(line).get("rows_missing", []) for line in exported.read_text().splitlines()]
    assert sorted(i for ids in named for i in ids) == ghosts  # signed, exported, each once


def test_a_ghost_row_whose_returned_hash_is_not_its_events_is_refused_before_revealing(
    own_database: dict[str, str], anchored: Anchored
) -> None:
    # The report's plant as written: the diverted rows come back with a made-up hash. The append
    # checks each returned hash against the event it wrote, so nothing is revealed.
    revealed, ghosts = _reveal_through_the_ghost_view(own_database, anchored, chained_hash=False)
    vault, exported = anchored
    assert revealed == 0, f"{revealed} values were revealed though their audit rows came back unchained ({ghosts})"
    vault.wait_for_checkpoint()
    finding = attack.audit_verify(vault, exported).finding
    assert finding is None or all(str(i) in finding.reason for i in ghosts), finding


def test_replicas_appending_concurrently_across_rounds_report_no_row_missing(
    own_database: dict[str, str], tmp_path: Path
) -> None:
    # Two replicas on one database, each checking its own rows every second while six callers
    # reveal and tokenize through both: the segment reads never report a row of theirs missing.
    counted = _rows_missing_counted()
    files = [tmp_path / f"replica-{n}.jsonl" for n in range(2)]
    with ExitStack() as both:
        replicas = [
            both.enter_context(
                running_vault(
                    own_database, TOKENVAULT_AUDIT_CHECKPOINT_SECONDS="1", TOKENVAULT_AUDIT_CHECKPOINT_FILE=str(f)
                )
            )
            for f in files
        ]
        token = attack.tokenize_fresh_ip(own_database, replicas[0])
        errors: list[BaseException] = []

        def calls(caller: int) -> None:
            vault = replicas[caller % 2]
            try:
                with VaultClient.connect(vault.address, stack_identity(own_database, "analyst"), deadline=10) as a:
                    deadline = time.monotonic() + 4  # four checkpoint rounds
                    n = 0
                    while time.monotonic() < deadline:
                        try:
                            a.detokenize([token], f"INC-{caller}{n}")
                        except VaultClientError:  # over the analyst's reveal budget: refused, audited too
                            time.sleep(0.05)
                        n += 1
                attack.tokenize_fresh_ip(own_database, vault)
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=calls, args=(caller,)) for caller in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        for vault in replicas:
            vault.wait_for_checkpoint()
        time.sleep(1.5)  # one more round on each replica: every row checked
        assert all(len(vault.wired.audit.appended) == 0 for vault in replicas)
    assert _rows_missing_counted() == counted, "a replica reported one of its own rows missing"
    for f in files:
        assert "rows_missing" not in f.read_text()
    with running_vault(own_database) as vault:
        for f in files:
            report = attack.audit_verify(vault, f)
            assert report.finding is None, report.finding
