"""The circuit breaker's state machine, on a fake clock: when it opens, the one trial, waiting for it."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.gateway import CircuitBreaker, CircuitOpen, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker_on(clock: Clock, **options: float) -> tuple[CircuitBreaker, list[CircuitState]]:
    changes: list[CircuitState] = []
    breaker = CircuitBreaker(open_seconds=10, clock=clock, on_change=changes.append, **options)  # type: ignore[arg-type]  # test options by keyword
    return breaker, changes


def calls(breaker: CircuitBreaker, failures: int = 0, successes: int = 0) -> None:
    for _ in range(successes):
        breaker.acquire().success()
    for _ in range(failures):
        breaker.acquire().failure()


def test_starts_closed_and_reports_it() -> None:
    breaker, changes = breaker_on(Clock())
    assert (breaker.state, breaker.available, changes) == (CircuitState.CLOSED, True, [CircuitState.CLOSED])
    assert [int(s) for s in CircuitState] == [0, 1, 2]


def test_a_few_failures_below_the_minimum_do_not_open_it() -> None:
    breaker, _ = breaker_on(Clock())
    calls(breaker, failures=9)  # three charges of a card that always fails, three attempts each
    assert breaker.state is CircuitState.CLOSED


def test_opens_when_failures_are_at_least_half_of_the_recent_calls() -> None:
    breaker, changes = breaker_on(Clock())
    calls(breaker, successes=10, failures=9)
    assert breaker.state is CircuitState.CLOSED  # 9 of 19
    calls(breaker, failures=1)
    assert breaker.state is CircuitState.OPEN  # 10 of 20
    assert changes == [CircuitState.CLOSED, CircuitState.OPEN]
    assert not breaker.available
    with pytest.raises(CircuitOpen):
        breaker.acquire()


def test_only_the_last_window_calls_count() -> None:
    breaker, _ = breaker_on(Clock())
    calls(breaker, failures=9)
    calls(breaker, successes=20)  # pushes the failures out of the 20-call window
    calls(breaker, failures=9)
    assert breaker.state is CircuitState.CLOSED  # 9 of 20


def test_calls_older_than_the_window_seconds_are_forgotten() -> None:
    clock = Clock()
    breaker, _ = breaker_on(clock)
    calls(breaker, failures=9)
    clock.now += 31
    calls(breaker, failures=1, successes=9)
    assert breaker.state is CircuitState.CLOSED  # 1 of 10 within 30 s
    calls(breaker, failures=7)
    assert breaker.state is CircuitState.CLOSED  # 8 of 17
    calls(breaker, failures=1)
    assert breaker.state is CircuitState.OPEN  # 9 of 18


def test_a_released_permit_counts_for_nothing_and_settles_once() -> None:
    breaker, _ = breaker_on(Clock(), min_calls=2, window_calls=4)
    permit = breaker.acquire()
    permit.release()  # cancelled: neither a success nor a failure
    permit.failure()  # already settled: ignored
    calls(breaker, failures=1)
    assert breaker.state is CircuitState.CLOSED  # one call counted, below the minimum of 2
    calls(breaker, failures=1)
    assert breaker.state is CircuitState.OPEN


def test_an_unusable_gateway_opens_it_at_once() -> None:
    breaker, _ = breaker_on(Clock())
    calls(breaker, successes=5)
    breaker.acquire().failure(unusable=True)
    assert breaker.state is CircuitState.OPEN


def test_after_open_seconds_one_trial_goes_through_and_its_success_closes() -> None:
    clock = Clock()
    breaker, changes = breaker_on(clock, min_calls=1, window_calls=1)
    calls(breaker, failures=1)
    clock.now += 9.9
    assert not breaker.available and breaker.seconds_until_trial() == pytest.approx(0.1)
    clock.now += 0.1
    assert breaker.available and breaker.state is CircuitState.OPEN
    trial = breaker.acquire()
    assert breaker.state is CircuitState.HALF_OPEN and not breaker.available
    with pytest.raises(CircuitOpen):
        breaker.acquire()  # one trial only
    trial.success()
    assert breaker.state is CircuitState.CLOSED and breaker.available
    assert changes == [CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]


def test_a_failed_trial_opens_it_again_for_open_seconds() -> None:
    clock = Clock()
    breaker, changes = breaker_on(clock, min_calls=1, window_calls=1)
    calls(breaker, failures=1)
    clock.now += 10
    breaker.acquire().failure()
    assert breaker.state is CircuitState.OPEN
    assert breaker.seconds_until_trial() == pytest.approx(10)
    assert changes[-2:] == [CircuitState.HALF_OPEN, CircuitState.OPEN]


def test_a_trial_abandoned_without_an_answer_lets_the_next_caller_try() -> None:
    clock = Clock()
    breaker, _ = breaker_on(clock, min_calls=1, window_calls=1)
    calls(breaker, failures=1)
    clock.now += 10
    breaker.acquire().release()
    assert breaker.state is CircuitState.HALF_OPEN and breaker.available
    breaker.acquire().success()
    assert breaker.state is CircuitState.CLOSED


def test_late_results_of_calls_started_before_it_opened_decide_nothing() -> None:
    clock = Clock()
    breaker, _ = breaker_on(clock, min_calls=2, window_calls=2)
    slow = breaker.acquire()  # in flight while the breaker opens
    calls(breaker, failures=2)
    assert breaker.state is CircuitState.OPEN
    clock.now += 10
    trial = breaker.acquire()
    slow.success()  # not the trial: does not close it
    assert breaker.state is CircuitState.HALF_OPEN
    trial.success()
    assert breaker.state is CircuitState.CLOSED
    calls(breaker, failures=1)  # the window starts afresh after closing
    assert breaker.state is CircuitState.CLOSED


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="failure_ratio"):
        CircuitBreaker(failure_ratio=0)
    with pytest.raises(ValueError, match="min_calls"):
        CircuitBreaker(min_calls=30, window_calls=20)


async def test_wait_until_callable_sleeps_until_the_trial_is_due() -> None:
    breaker = CircuitBreaker(open_seconds=0.2, min_calls=1, window_calls=1)
    calls(breaker, failures=1)
    started = time.monotonic()
    assert not await breaker.wait_until_callable(0.05)
    assert await breaker.wait_until_callable(2.0)
    waited = time.monotonic() - started
    assert 0.18 <= waited < 1.0


async def test_waiters_wake_when_the_trial_closes_the_breaker() -> None:
    breaker = CircuitBreaker(open_seconds=0.01, min_calls=1, window_calls=1)
    calls(breaker, failures=1)
    await asyncio.sleep(0.02)
    trial = breaker.acquire()
    waiter = asyncio.create_task(breaker.wait_until_available(5.0))
    await asyncio.sleep(0.05)
    assert not waiter.done()  # a trial is under way: nobody else may call
    started = time.monotonic()
    trial.success()
    assert await asyncio.wait_for(waiter, 1.0)
    assert time.monotonic() - started < 0.5
