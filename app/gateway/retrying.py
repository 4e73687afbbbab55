"""Retries for transient gateway failures: per-attempt timeout, exponential backoff with jitter.

Only transient errors and timeouts are retried; a decline is final at once. Every attempt
uses the same idempotency key, so a retry never charges twice.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from collections.abc import Awaitable, Callable
from typing import Protocol

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app.domain import ChargeResult, FailureCode
from app.gateway.base import ChargeRequest, GatewayTransientError, PaymentGateway


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    timeout_s: float = 5.0
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0


class ChargeObserver(Protocol):
    """Told about every attempt (metrics, logs); result is ok / declined / transient / timeout."""

    def attempt_finished(self, request: ChargeRequest, attempt: int, result: str, seconds: float) -> None: ...

    def retry_scheduled(self, request: ChargeRequest, attempt: int, result: str, wait_s: float) -> None: ...


class _NoObserver:
    def attempt_finished(self, request: ChargeRequest, attempt: int, result: str, seconds: float) -> None:
        pass

    def retry_scheduled(self, request: ChargeRequest, attempt: int, result: str, wait_s: float) -> None:
        pass


class RetryingCharger:
    """Charges through a gateway and always ends with a ChargeResult (never raises, except
    cancellation)."""

    def __init__(self, gateway: PaymentGateway, policy: RetryPolicy, observer: ChargeObserver | None = None) -> None:
        self.gateway = gateway
        self.policy = policy
        self.observer = observer or _NoObserver()

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        policy = self.policy
        attempt = 0

        async def one_attempt() -> ChargeResult:
            nonlocal attempt
            attempt += 1
            started = time.perf_counter()
            try:
                async with asyncio.timeout(policy.timeout_s):
                    result = await self.gateway.charge(request)
            except TimeoutError:
                self.observer.attempt_finished(request, attempt, "timeout", time.perf_counter() - started)
                raise
            except GatewayTransientError:
                self.observer.attempt_finished(request, attempt, "transient", time.perf_counter() - started)
                raise
            self.observer.attempt_finished(
                request, attempt, "ok" if result.success else "declined", time.perf_counter() - started
            )
            return result

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            kind = "timeout" if isinstance(error, TimeoutError) else "transient"
            wait_s = state.next_action.sleep if state.next_action else 0.0
            self.observer.retry_scheduled(request, state.attempt_number, kind, wait_s)

        # Fast path: most charges answer the first time, without building a retry loop.
        try:
            result = await one_attempt()
        except (GatewayTransientError, TimeoutError) as first_failure:
            try:
                result = await self._retry(one_attempt, first_failure, before_sleep)
            except RetryError as exhausted:
                last = exhausted.last_attempt.exception()
                if isinstance(last, TimeoutError):
                    return ChargeResult.failed(FailureCode.TIMEOUT, attempts=attempt)
                return ChargeResult.failed(FailureCode.GATEWAY_ERROR, attempts=attempt)
            except asyncio.CancelledError:
                raise
            except Exception:  # an unexpected gateway fault: the payment fails, it is not retried
                return ChargeResult.failed(FailureCode.GATEWAY_ERROR, attempts=attempt)
        except asyncio.CancelledError:
            raise
        except Exception:  # an unexpected gateway fault: the payment fails, it is not retried
            return ChargeResult.failed(FailureCode.GATEWAY_ERROR, attempts=attempt)
        return ChargeResult(
            result.success, result.transaction_id, result.failure_code, result.failure_reason, attempts=attempt
        )

    async def _retry(
        self,
        one_attempt: Callable[[], Awaitable[ChargeResult]],
        first_failure: BaseException,
        before_sleep: Callable[[RetryCallState], None],
    ) -> ChargeResult:
        """Attempts 2…n with backoff; attempt 1 already failed with `first_failure`."""
        policy = self.policy
        pending_failure: list[BaseException] = [first_failure]

        async def attempt_or_replay() -> ChargeResult:
            if pending_failure:  # tenacity's attempt 1 is the one already made
                raise pending_failure.pop()
            return await one_attempt()

        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=wait_exponential_jitter(initial=policy.base_delay_s, max=policy.max_delay_s, jitter=policy.base_delay_s),
            retry=retry_if_exception_type((GatewayTransientError, TimeoutError)),
            before_sleep=before_sleep,
            reraise=False,
        )
        return await retrying(attempt_or_replay)
