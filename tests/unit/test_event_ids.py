"""Event ids are ULIDs made by the gateway itself: time first, sortable as text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.events import CROCKFORD, first_event_id, new_event_id


def test_an_id_is_26_characters_of_the_ulid_alphabet_with_the_time_first() -> None:
    # The ULID spec's example: 1469918176385 ms is written 01ARYZ6S41.
    moment = datetime.fromtimestamp(1469918176.385, UTC)
    made = new_event_id(moment)
    assert len(made) == 26
    assert set(made) <= set(CROCKFORD)
    assert made[:10] == "01ARYZ6S41"
    assert first_event_id(moment) == "01ARYZ6S41" + "0" * 16


def test_ids_sort_in_the_order_they_were_made_within_one_millisecond_too() -> None:
    moment = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
    same_ms = [new_event_id(moment) for _ in range(1000)]
    assert same_ms == sorted(same_ms)
    assert len(set(same_ms)) == len(same_ms)
    later = new_event_id(moment + timedelta(milliseconds=1))
    assert same_ms[-1] < first_event_id(moment + timedelta(milliseconds=1)) <= later
    now = [new_event_id() for _ in range(1000)]
    assert now == sorted(now)


def test_the_first_id_of_a_moment_sorts_after_every_earlier_id_and_before_every_later_one() -> None:
    moment = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
    before = new_event_id(moment - timedelta(milliseconds=1))
    after = new_event_id(moment)
    assert before < first_event_id(moment) <= after
