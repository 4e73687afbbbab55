"""One way to wait out an unreachable server: retry with capped exponential backoff (tenacity)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from loguru import logger
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

T = TypeVar("T")


async def patiently(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_on: Callable[[BaseException], bool],
    initial_s: float = 0.2,
    max_wait_s: float = 10.0,
) -> T:
    """Run `operation` until it succeeds, waiting between tries while `retry_on(error)` holds
    (any other error is raised at once). Logs one warning per wait."""

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.warning(
            "{what} unavailable; retrying in {wait:.1f} s ({error})",
            what=what,
            wait=state.next_action.sleep if state.next_action else 0.0,
            error=str(error) or type(error).__name__,
        )

    retrying = AsyncRetrying(
        retry=retry_if_exception(retry_on),
        wait=wait_exponential_jitter(multiplier=initial_s, max=max_wait_s, jitter=initial_s),
        before_sleep=before_sleep,
        reraise=True,
    )

    async def attempt() -> T:  # a coroutine function, whatever `operation` is (lambdas too)
        return await operation()

    return await retrying(attempt)
