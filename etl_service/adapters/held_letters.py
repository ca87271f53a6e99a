"""The dead letters one DLQ reader holds in flight, by message id: counted, forgotten and released in linear time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from etl_service.adapters.dead_letter import DeadLetter


class HeldLetters:
    """Each held dead letter under every receipt handle it was listed with, the newest last.

    A letter listed again (its lease ran out) holds two receipt handles: `release_all` returns
    both, so neither lease is left to run out. Deleting or re-sending a letter forgets every one
    of its handles in constant time (`forget`): a sweep deleting the 100,000 letters it holds
    does so in linear time, where rebuilding a list per deletion was quadratic.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, list[DeadLetter]] = {}

    def add(self, letters: Iterable[DeadLetter]) -> None:
        """Hold `letters` as a listing received them (a letter listed again: its newer handle too)."""
        for letter in letters:
            self._by_id.setdefault(letter.message_id, []).append(letter)

    def forget(self, message_id: str) -> None:
        """Stop holding the letter `message_id` (deleted or re-sent) under any of its handles."""
        self._by_id.pop(message_id, None)

    def newest(self, message_id: str) -> DeadLetter | None:
        """The letter `message_id` as last listed (its newest receipt handle), None when not held."""
        listed = self._by_id.get(message_id)
        return listed[-1] if listed else None

    def __len__(self) -> int:
        """How many distinct dead letters are held."""
        return len(self._by_id)

    def release_all(self) -> list[DeadLetter]:
        """Every held letter under each of its receipt handles, to release; holds none afterwards."""
        held = [letter for listed in self._by_id.values() for letter in listed]
        self._by_id = {}
        return held
