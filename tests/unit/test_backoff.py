"""Exponential backoff with full jitter: ceilings, bounds, reset, and bad input."""

from __future__ import annotations

import pytest

from main_process.connection.backoff import Backoff, BackoffPolicy


def test_ceilings_double_from_base_up_to_cap() -> None:
    policy = BackoffPolicy()
    assert [policy.ceiling(n) for n in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_ceiling_never_overflows_for_a_client_that_retries_forever() -> None:
    policy = BackoffPolicy(base=1, factor=2, cap=30)
    assert policy.ceiling(10_000) == 30
    assert BackoffPolicy(base=0.5, factor=1.0001, cap=7).ceiling(10**9) == 7


def test_factor_one_and_base_over_cap_are_constant() -> None:
    assert BackoffPolicy(base=3, factor=1, cap=30).ceiling(50) == 3
    assert BackoffPolicy(base=40, factor=2, cap=30).ceiling(0) == 30


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.999999])
def test_full_jitter_stays_within_zero_and_the_ceiling(fraction: float) -> None:
    backoff = Backoff(BackoffPolicy(), random_source=lambda: fraction)
    for failures in range(12):
        ceiling = backoff.policy.ceiling(failures)
        delay = backoff.next_delay()
        assert 0 <= delay <= ceiling
        assert delay == pytest.approx(ceiling * fraction)
    assert backoff.failures == 12


def test_jitter_from_a_misbehaving_source_is_clamped() -> None:
    assert Backoff(BackoffPolicy(), random_source=lambda: -3.0).next_delay() == 0
    assert Backoff(BackoffPolicy(), random_source=lambda: 7.0).next_delay() == 1


def test_jitter_uses_the_whole_window() -> None:
    import random

    rng = random.Random(1234)
    backoff = Backoff(BackoffPolicy(), random_source=rng.random)
    delays = []
    for _ in range(2000):
        backoff.reset()
        for _ in range(5):
            backoff.next_delay()
        delays.append(backoff.next_delay())  # ceiling 30 s after 5 failures
    assert min(delays) < 1.5
    assert max(delays) > 28.5
    assert all(0 <= d < 30 for d in delays)


def test_reset_starts_over() -> None:
    backoff = Backoff(BackoffPolicy(), random_source=lambda: 0.5)
    for _ in range(4):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next_delay() == 0.5


@pytest.mark.parametrize(
    "kwargs",
    [{"base": 0}, {"cap": -1}, {"factor": 0.5}, {"reset_after": -1}],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        BackoffPolicy(**kwargs)


def test_negative_failures_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        BackoffPolicy().ceiling(-1)
