"""InFlight: a key being written by one call is not handed to another, which waits for it."""

from __future__ import annotations

import threading

from vault_service.adapters.in_flight import InFlight


def test_a_second_writer_gets_none_of_the_claimed_keys_and_the_first_writers_event() -> None:
    in_flight = InFlight()
    first_done, second_done = threading.Event(), threading.Event()
    first = in_flight.claim([b"a", b"b"], first_done)
    second = in_flight.claim([b"b", b"c"], second_done)
    assert first.mine == {b"a", b"b"} and not first.others
    assert second.mine == {b"c"} and second.others == {first_done}


def test_release_frees_the_keys_and_wakes_the_waiters() -> None:
    in_flight = InFlight()
    done = threading.Event()
    claim = in_flight.claim([b"a"], done)
    waiter = in_flight.claim([b"a"], threading.Event())
    woke = threading.Event()

    def wait() -> None:
        if all(writer.wait(5) for writer in waiter.others):
            woke.set()

    thread = threading.Thread(target=wait)
    thread.start()
    in_flight.release(claim, done)
    thread.join(5)
    assert woke.is_set()
    assert len(in_flight) == 0
    assert in_flight.claim([b"a"], threading.Event()).mine == {b"a"}


def test_a_key_listed_twice_by_one_writer_is_claimed_once_and_never_waited_for() -> None:
    in_flight = InFlight()
    done = threading.Event()
    claim = in_flight.claim([b"a", b"a"], done)
    assert claim.mine == {b"a"} and not claim.others
