"""A purpose naming a value stored for another call is withheld; the lookup is cached (attack 14, finding 3).

Over fakes: which values a purpose is looked up by, that a hit withholds (never refuses), that a
distinct purpose costs one lookup per LOOKUP_TTL_SECONDS, and that an erased value is no hit. The
real-vault probes of the report are in tests/integration/test_purpose_stored_values.py.
"""

from __future__ import annotations

import logging

import pytest

from tests.unit.purpose_vaults import DEVICE, vault_with_two_tokens
from vault_service.domain.purpose import stored_candidates
from vault_service.domain.token_types import TokenType
from vault_service.service.revealing import Revealed
from vault_service.service.stored_values import LOOKUP_TTL_SECONDS, MAX_CANDIDATES, StoredValueLookup
from vault_service.service.vault_base import purposes_withheld


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_candidates_hold_the_device_id_shaped_runs_as_written_in_upper_and_in_lower_case() -> None:
    candidates = stored_candidates("GDPR-2026-801-Sm-G991b-QwertyUI").device_ids
    assert {"Sm-G991b-QwertyUI", "SM-G991B-QWERTYUI", "sm-g991b-qwertyui", "smg991bqwertyui"} <= candidates


def test_no_group_and_no_word_with_its_number_is_a_candidate() -> None:
    # Review 15, finding 1: every group (`GDPR`, `2026`) and `GDPR-2026` were looked up as device
    # ids, and the hex halves 2026/0042 as the ip 32.38.0.66: a producer blanked whole classes.
    for reference in ("GDPR-2026-0042", "INC-4821", "CASE-2026-0815", "GDPR-2026-0042/INC-4821", "INC-cb00-7107"):
        assert stored_candidates(reference).size == 0, reference
    assert "GDPR-2026" not in stored_candidates("GDPR-2026-801-SM-G991B-QWERTYUI").device_ids


def test_short_device_ids_and_an_ip_a_producer_sent_blank_no_reference() -> None:
    vault, _, audit, ip_token, _ = vault_with_two_tokens()
    poison = [(TokenType.DEVICE_ID, value) for value in ("INC", "2026", "GDPR", "GDPR-2026", "0042", "4821")]
    vault.tokenize("etl", [*poison, (TokenType.IP, "32.38.0.66")])
    for reference in ("GDPR-2026-0042", "INC-4821"):
        vault.detokenize("analyst", [ip_token], reference)
        assert audit.events[-1].purpose == reference


def test_a_device_id_stored_in_lower_case_is_found_in_upper_case() -> None:
    # Review 15, finding 4: an Android id is stored as 16 lower-case hex digits.
    vault, _, audit, ip_token, _ = vault_with_two_tokens()
    vault.tokenize("etl", [(TokenType.DEVICE_ID, "dcfabeeb9acdfe7b")])
    vault.detokenize("analyst", [ip_token], "INC-DCFABEEB9ACDFE7B")
    assert audit.events[-1].purpose == "INC-(withheld)"  # the device's run withheld, the reference kept


def test_a_reveal_naming_a_device_of_another_call_is_served_and_keeps_none_of_the_device() -> None:
    vault, _, audit, ip_token, _ = vault_with_two_tokens()
    (result,) = vault.detokenize("analyst", [ip_token], f"INC-{DEVICE}")
    assert isinstance(result, Revealed)
    assert (audit.events[-1].outcome, audit.events[-1].purpose) == ("ok: 1 revealed, 0 refused", "INC-(withheld)")


def test_an_erasure_split_in_two_calls_keeps_the_device_id_in_neither_row() -> None:
    vault, store, _, ip_token, device_token = vault_with_two_tokens()
    purpose = f"GDPR-2026-801-{DEVICE}"
    assert vault.erase("officer", [ip_token], purpose) == [None]
    assert vault.erase("officer", [device_token], purpose) == [None]
    assert [event.purpose for event in store.erase_events] == ["", ""]


def test_a_reference_naming_no_stored_value_is_kept() -> None:
    vault, _, audit, ip_token, _ = vault_with_two_tokens()
    vault.detokenize("analyst", [ip_token], "CASE-2026-0815")
    assert audit.events[-1].purpose == "CASE-2026-0815"


def test_one_lookup_per_distinct_purpose_until_the_answer_is_older_than_the_ttl() -> None:
    vault, store, _, _, _ = vault_with_two_tokens()
    clock = _Clock()
    lookup = StoredValueLookup(store, vault._keys, clock=clock)
    for _ in range(5):
        assert lookup.names_a_stored_value("CASE-2026-0815") is False
        assert lookup.names_a_stored_value(f"INC-{DEVICE}") is True
    assert (lookup.lookups, store.stored_among_calls) == (2, 1)  # CASE-2026-0815 has nothing to look up
    clock.now += LOOKUP_TTL_SECONDS
    lookup.names_a_stored_value("CASE-2026-0815")
    lookup.names_a_stored_value(f"INC-{DEVICE}")
    assert (lookup.lookups, store.stored_among_calls) == (4, 2)


def test_an_erased_value_is_no_longer_found() -> None:
    vault, store, _, _, device_token = vault_with_two_tokens()
    clock = _Clock()
    lookup = StoredValueLookup(store, vault._keys, clock=clock)
    assert lookup.names_a_stored_value(f"INC-{DEVICE}") is True
    vault.erase("officer", [device_token], "GDPR-2026-0815")
    assert lookup.names_a_stored_value(f"INC-{DEVICE}") is True  # cached: the safe side, for at most the TTL
    clock.now += LOOKUP_TTL_SECONDS
    assert lookup.names_a_stored_value(f"INC-{DEVICE}") is False


def test_a_purpose_of_more_candidates_than_the_bound_is_withheld_without_a_lookup() -> None:
    vault, store, audit, ip_token, _ = vault_with_two_tokens()
    many_groups = "K2L-BC-DE-FG-HI-J3K-NO-QR-TU-WX-Z4Y-MN-PQ-RS"  # 14 groups, 3 serial-shaped: 256 values
    assert stored_candidates(many_groups).size > MAX_CANDIDATES
    vault.detokenize("analyst", [ip_token], many_groups)
    assert (audit.events[-1].purpose, store.stored_among_calls) == ("", 0)


def test_every_withhold_is_counted_alike_and_none_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    # Review 15, finding 2: a warning of its own on a stored-value hit told whoever reads the logs
    # whether a guess (`INC-<device id>`) is stored anywhere in the vault.
    vault, _, audit, ip_token, device_token = vault_with_two_tokens()
    before = purposes_withheld()
    with caplog.at_level(logging.DEBUG, logger="vault_service"):
        vault.detokenize("analyst", [ip_token], f"INC-{DEVICE}")  # names a value of another call
        vault.detokenize("analyst", [device_token], f"INC-{DEVICE}")  # spells the call's own (masked) value
        vault.detokenize("analyst", [ip_token], "CASE-2026-0815")  # kept
    assert [event.purpose for event in audit.events[-3:]] == ["INC-(withheld)", "", "CASE-2026-0815"]
    assert purposes_withheld() == before + 2
    assert [r.getMessage() for r in caplog.records if "purpose" in r.getMessage()] == []
