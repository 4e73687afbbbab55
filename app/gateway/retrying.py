"""Retries for transient gateway failures behind the circuit breaker: per-attempt timeout, exponential
backoff with jitter, one idempotency key for all attempts of a charge or refund.

Each attempt asks the breaker first (open: `GatewayOutage`, no call) and reports to it how the
gateway answered. A decline is final at once. When the retries run out:
- charges: the breaker not closed → `GatewayOutage` (the order waits for the gateway); closed →
  the payment fails with TIMEOUT or GATEWAY_ERROR (a single card that keeps failing fails alone);
- refunds: `GatewayOutage` (the refund stays owed and is tried again later).
An unusable gateway (401/403) is `GatewayOutage` at once. An unexpected fault fails the charge
(GATEWAY_ERROR) or the refund (declined, for an operator) without a retry.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from loguru import logger
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app.domain import ChargeResult, FailureCode
from app.gateway.base import (
    ChargeRequest,
    GatewayOutage,
    GatewayTransientError,
    GatewayUnusableError,
    PaymentGateway,
    RefundRequest,
    RefundResult,
)
from app.gateway.breaker import CircuitBreaker, CircuitOpen, CircuitState, Permit

T = TypeVar("T")
Request = ChargeRequest | RefundRequest
RETRIED = (GatewayTransientError, TimeoutError)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    timeout_s: float = 5.0
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0


class ChargeObserver(Protocol):
    """Told about every charge attempt (metrics, logs); result is ok / declined / transient /
    timeout / unusable."""

    def attempt_finished(self, request: ChargeRequest, attempt: int, result: str, seconds: float) -> None: ...

    def retry_scheduled(self, request: ChargeRequest, attempt: int, result: str, wait_s: float) -> None: ...


class _NoObserver:
    def attempt_finished(self, request: ChargeRequest, attempt: int, result: str, seconds: float) -> None:
        pass

    def retry_scheduled(self, request: ChargeRequest, attempt: int, result: str, wait_s: float) -> None:
        pass


class _Attempts:
    """The attempts of one charge or refund: breaker permit, timeout, observation."""

    def __init__(self, owner: RetryingCharger, request: Request, observe: bool) -> None:
        self.owner = owner
        self.request = request
        self.observe = observe
        self.count = 0

    async def one(self, call: Callable[[], Awaitable[T]], answered: Callable[[T], str]) -> T:
        permit = _permit(self.owner.breaker, self.request)
        self.count += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.owner.policy.timeout_s):
                result = await call()
        except BaseException as error:
            self._failed(permit, error, time.perf_counter() - started)
            raise
        if permit is not None:
            permit.success()  # a decline too: the gateway answered
        self._observed(answered(result), time.perf_counter() - started)
        return result

    def _failed(self, permit: Permit | None, error: BaseException, seconds: float) -> None:
        kind = _kind(error)
        if permit is not None:
            if kind in ("transient", "timeout", "unusable"):
                permit.failure(unusable=kind == "unusable")
            else:  # cancelled, or a fault of our own: says nothing about the gateway
                permit.release()
        if kind != "error":
            self._observed(kind, seconds)

    def _observed(self, result: str, seconds: float) -> None:
        if self.observe and isinstance(self.request, ChargeRequest):
            self.owner.observer.attempt_finished(self.request, self.count, result, seconds)

    def before_sleep(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        kind = _kind(error) if error is not None else "transient"
        wait_s = state.next_action.sleep if state.next_action else 0.0
        if isinstance(self.request, ChargeRequest):
            self.owner.observer.retry_scheduled(self.request, state.attempt_number, kind, wait_s)
        else:
            logger.warning(
                "refund attempt failed ({kind}); retrying in {wait_ms} ms",
                kind=kind,
                wait_ms=round(wait_s * 1000),
                order_id=self.request.order_id,
                attempt=state.attempt_number,
            )


def _kind(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, GatewayTransientError):
        return "transient"
    if isinstance(error, GatewayUnusableError):
        return "unusable"
    return "error"


class RetryingCharger:
    """Charges and refunds through a gateway. A charge ends with a ChargeResult and a refund with a
    RefundResult, unless the order must wait for the gateway: then `GatewayOutage` is raised."""

    def __init__(
        self,
        gateway: PaymentGateway,
        policy: RetryPolicy,
        observer: ChargeObserver | None = None,
        *,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.gateway = gateway
        self.policy = policy
        self.observer = observer or _NoObserver()
        self.breaker = breaker
        # Orders whose retries ran out once while the circuit stayed closed: the first time could
        # be the start of an outage the breaker has not seen enough of yet, so the order gets
        # one more round (the caller pauses first); the second time it is this card and fails.
        self._second_round: OrderedDict[str, None] = OrderedDict()

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        attempts = _Attempts(self, request, observe=True)
        try:
            result = await self._run(attempts, lambda: self.gateway.charge(request), _charge_answer)
        except RetryError as exhausted:
            self._outage_if_not_closed(request, attempts.count)
            last = exhausted.last_attempt.exception()
            code = FailureCode.TIMEOUT if isinstance(last, TimeoutError) else FailureCode.GATEWAY_ERROR
            return ChargeResult.failed(code, attempts=attempts.count)
        except (GatewayOutage, asyncio.CancelledError):
            raise
        except Exception as error:  # noqa: BLE001 - an unexpected gateway fault: the payment fails, not retried
            logger.error("charge failed on an unexpected error: {error}", error=repr(error), order_id=request.order_id)
            return ChargeResult.failed(FailureCode.GATEWAY_ERROR, attempts=attempts.count)
        return ChargeResult(
            result.success, result.transaction_id, result.failure_code, result.failure_reason, attempts=attempts.count
        )

    async def refund(self, request: RefundRequest) -> RefundResult:
        attempts = _Attempts(self, request, observe=False)
        try:
            return await self._run(attempts, lambda: self.gateway.refund(request), _refund_answer)
        except RetryError:
            raise GatewayOutage(f"refund of order {request.order_id}: the gateway did not answer") from None
        except (GatewayOutage, asyncio.CancelledError):
            raise
        except Exception as error:  # noqa: BLE001 - an unexpected gateway fault: left to an operator, not retried
            logger.error("refund failed on an unexpected error: {error}", error=repr(error), order_id=request.order_id)
            return RefundResult.declined(f"Refund failed: {type(error).__name__}")

    async def _run(self, attempts: _Attempts, call: Callable[[], Awaitable[T]], answered: Callable[[T], str]) -> T:
        """The first attempt, then (on a transient failure) attempts 2…n with backoff. Unusable →
        GatewayOutage; exhausted → RetryError."""
        try:
            try:  # fast path: most calls answer the first time, without building a retry loop
                return await attempts.one(call, answered)
            except RETRIED as first_failure:
                return await self._retry(attempts, call, answered, first_failure)
        except GatewayUnusableError as error:
            raise GatewayOutage(f"the gateway refuses this service: {error}") from None

    async def _retry(
        self,
        attempts: _Attempts,
        call: Callable[[], Awaitable[T]],
        answered: Callable[[T], str],
        first_failure: BaseException,
    ) -> T:
        policy = self.policy
        pending_failure: list[BaseException] = [first_failure]

        async def attempt_or_replay() -> T:
            if pending_failure:  # tenacity's attempt 1 is the one already made
                raise pending_failure.pop()
            return await attempts.one(call, answered)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=wait_exponential_jitter(
                multiplier=policy.base_delay_s, max=policy.max_delay_s, jitter=policy.base_delay_s
            ),
            retry=retry_if_exception_type(RETRIED),
            before_sleep=attempts.before_sleep,
            reraise=False,
        )
        return await retrying(attempt_or_replay)

    def _outage_if_not_closed(self, request: ChargeRequest, attempts: int) -> None:
        """Retries ran out: while the breaker is open or trying, this is an outage, not this card.
        With the breaker closed, the first time the order waits for one more round."""
        if self.breaker is not None and self.breaker.state is CircuitState.CLOSED:
            key = request.idempotency_key
            if key in self._second_round:
                del self._second_round[key]
                return
            self._second_round[key] = None
            while len(self._second_round) > 10_000:
                self._second_round.popitem(last=False)
            logger.warning("charge retries ran out: the order gets one more round", order_id=request.order_id)
            raise GatewayOutage(f"order {request.order_id}: one more round before it fails")
        if self.breaker is not None and self.breaker.state is not CircuitState.CLOSED:
            logger.warning(
                "charge retries ran out while the gateway circuit is {state}: the order waits",
                state=self.breaker.state.name.lower(),
                order_id=request.order_id,
                attempts=attempts,
            )
            raise GatewayOutage(f"order {request.order_id} waits for the gateway")


def _permit(breaker: CircuitBreaker | None, request: Request) -> Permit | None:
    if breaker is None:
        return None
    try:
        return breaker.acquire()
    except CircuitOpen as refused:
        raise GatewayOutage(f"order {request.order_id} waits: {refused}") from None


def _charge_answer(result: ChargeResult) -> str:
    return "ok" if result.success else "declined"


def _refund_answer(result: RefundResult) -> str:
    return "ok" if result.success else "declined"
