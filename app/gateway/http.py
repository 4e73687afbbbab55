"""The HTTP payment gateway adapter: a Stripe-style API (`/v1/charges`, `/v1/refunds`) over one pooled httpx client.

Requests carry `Authorization: Bearer <key>` and the idempotency key of the order
(`order-<orderId>` / `refund-order-<orderId>`), so a retry or a re-charge after a crash gets the
first answer back. Answers map to results and errors as follows:

| answer | charge | refund |
|---|---|---|
| 200 | SUCCEEDED, transactionId = `id` | refunded, refundId = `id` |
| 402 | FAILED by `decline_code`, else `code` (see DECLINE_CODES) | declined |
| 400 `charge_already_refunded` | — | refunded (no refund id known) |
| 409, 429, 5xx, connection errors | GatewayTransientError | GatewayTransientError |
| attempt timeout | TimeoutError | TimeoutError |
| 401, 403 | GatewayUnusableError | GatewayUnusableError |
| other 4xx | FAILED UNKNOWN, logged as an error | declined, logged as an error |

The API key lives in a SecretStr and is put on each request's headers only: it is in no repr,
log line or exception message. The card holder's name is never sent.
"""

from __future__ import annotations

from typing import Any

import httpx
from loguru import logger
from pydantic import SecretStr

from app import __version__
from app.domain import ChargeResult, FailureCode, PaymentMethod
from app.domain.money import to_minor_units
from app.gateway.base import (
    ChargeRequest,
    GatewayTransientError,
    GatewayUnusableError,
    RefundRequest,
    RefundResult,
)

DECLINE_CODES: dict[str, FailureCode] = {
    "insufficient_funds": FailureCode.INSUFFICIENT_FUNDS,
    "expired_card": FailureCode.CARD_EXPIRED,
    "incorrect_number": FailureCode.INVALID_CARD,
    "invalid_number": FailureCode.INVALID_CARD,
    "fraudulent": FailureCode.FRAUD_SUSPECTED,
}
MAX_REASON = 500  # failure reasons are stored; a gateway's message is cut to this length
ALREADY_REFUNDED = "charge_already_refunded"


class HttpGateway:
    """The gateway behind `PAYMENT_GATEWAY=http`. `timeout_s` bounds one attempt (the retry layer
    bounds it too); `max_connections` should cover every concurrent charge and refund."""

    def __init__(
        self,
        base_url: str,
        api_key: str | SecretStr,
        *,
        timeout_s: float = 5.0,
        max_connections: int = 32,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"Accept": "application/json", "User-Agent": f"foodies-payment/{__version__}"},
            follow_redirects=False,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"HttpGateway({self.base_url!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        try:
            body = charge_body(request)
        except ValueError as unrepresentable:  # the decoder rejects such amounts; never guess a charge
            logger.error("charge not sent: {why}", why=str(unrepresentable), order_id=request.order_id)
            return ChargeResult.failed(FailureCode.UNKNOWN)
        response = await self._post("/v1/charges", request.idempotency_key, body)
        status = response.status_code
        if 200 <= status < 300:
            return ChargeResult.succeeded(_id_of(response))
        error = _error_object(response)
        if status == 402:
            code = DECLINE_CODES.get(
                str(error.get("decline_code") or error.get("code") or ""), FailureCode.CARD_DECLINED
            )
            return ChargeResult.failed(code, _message(error))
        self._raise_if_not_final(response, error)
        logger.error(
            "gateway rejected the charge request: the payment fails",
            order_id=request.order_id,
            http_status=status,
            error_type=error.get("type"),
            error_code=error.get("code"),
            error_message=_message(error),
        )
        return ChargeResult.failed(FailureCode.UNKNOWN)

    async def refund(self, request: RefundRequest) -> RefundResult:
        body = {
            "charge": request.transaction_id,
            "reason": "requested_by_customer",
            "metadata": {"orderId": str(request.order_id)},
        }
        response = await self._post("/v1/refunds", request.idempotency_key, body)
        status = response.status_code
        if 200 <= status < 300:
            return RefundResult.refunded(_id_of(response))
        error = _error_object(response)
        if status == 400 and error.get("code") == ALREADY_REFUNDED:
            logger.info("the gateway had refunded this charge already", order_id=request.order_id)
            return RefundResult.refunded(None)
        if status == 402:
            return RefundResult.declined(_message(error) or "Refund declined")
        self._raise_if_not_final(response, error)
        logger.error(
            "gateway rejected the refund request: left to an operator",
            order_id=request.order_id,
            http_status=status,
            error_type=error.get("type"),
            error_code=error.get("code"),
            error_message=_message(error),
        )
        return RefundResult.declined(_message(error) or f"Refund rejected by the gateway (HTTP {status})")

    async def _post(self, path: str, idempotency_key: str, body: dict[str, Any]) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "Idempotency-Key": idempotency_key,
        }
        try:
            return await self._client.post(path, json=body, headers=headers)
        except httpx.TimeoutException as error:
            raise TimeoutError(f"gateway {path}: {type(error).__name__}") from None
        except httpx.TransportError as error:
            raise GatewayTransientError(f"gateway {path}: {type(error).__name__}") from None

    @staticmethod
    def _raise_if_not_final(response: httpx.Response, error: dict[str, Any]) -> None:
        """Raise for the answers that decide nothing: the caller may retry, or must wait."""
        status = response.status_code
        if status in (401, 403):
            raise GatewayUnusableError(f"HTTP {status} {error.get('type') or ''}".strip())
        if status in (409, 429) or status >= 500 or status < 400:
            raise GatewayTransientError(f"HTTP {status} {error.get('code') or ''}".strip())


def charge_body(request: ChargeRequest) -> dict[str, Any]:
    """The JSON of a charge: amount in minor units, currency in lower case, no card holder name."""
    currency = request.currency.upper()
    return {
        "amount": to_minor_units(request.amount, currency),
        "currency": currency.lower(),
        "description": f"Foodies order {request.order_id}",
        "metadata": {"orderId": str(request.order_id), "buyerId": request.buyer_id},
        "paymentMethod": _payment_method(request.payment_method),
    }


def _payment_method(method: PaymentMethod | None) -> dict[str, Any]:
    if method is None:
        return {"type": None, "cardLastFour": None, "cardBrand": None, "expirationMonth": None, "expirationYear": None}
    return {
        "type": method.type.value,
        "cardLastFour": method.card_last_four,
        "cardBrand": method.card_brand.value if method.card_brand else None,
        "expirationMonth": method.expiration_month,
        "expirationYear": method.expiration_year,
    }


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _id_of(response: httpx.Response) -> str:
    """The object id of a 2xx answer; an answer without one is treated as no answer (retried:
    the same key returns the stored object)."""
    payload = _json(response)
    found = payload.get("id") if isinstance(payload, dict) else None
    if not isinstance(found, str) or not found:
        raise GatewayTransientError(f"HTTP {response.status_code} without an object id")
    return found


def _error_object(response: httpx.Response) -> dict[str, Any]:
    payload = _json(response)
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else {}


def _message(error: dict[str, Any]) -> str | None:
    message = error.get("message")
    return message[:MAX_REASON] if isinstance(message, str) and message else None
