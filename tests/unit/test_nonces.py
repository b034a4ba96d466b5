"""Used nonces: each accepted once, remembered only while its message could still be valid."""

from datetime import UTC, datetime, timedelta

from gateway.nonces import CLOCK_SKEW, MAX_NONCES, UsedNonces

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_a_nonce_is_used_once_it_is_remembered():
    nonces = UsedNonces(timedelta(minutes=5))
    assert not nonces.used("n-1", T0)
    nonces.remember("n-1", T0)
    assert nonces.used("n-1", T0 + timedelta(minutes=1))
    assert not nonces.used("n-2", T0 + timedelta(minutes=1))


def test_nonces_older_than_the_window_and_the_skew_are_forgotten():
    nonces = UsedNonces(timedelta(minutes=5))
    nonces.remember("old", T0)
    nonces.remember("new", T0 + timedelta(minutes=4))
    later = T0 + timedelta(minutes=5) + CLOCK_SKEW + timedelta(seconds=1)
    assert not nonces.used("old", later)
    assert nonces.used("new", later)
    assert set(nonces.issued()) == {"new"}


def test_memory_is_bounded_inside_the_window():
    nonces = UsedNonces(timedelta(days=1))
    for i in range(MAX_NONCES + 10):
        nonces.remember(f"n-{i}", T0)
    assert len(nonces.issued()) == MAX_NONCES
    assert not nonces.used("n-0", T0)
    assert nonces.used(f"n-{MAX_NONCES + 9}", T0)
