"""How the admin API's parameters are read and described: whole numbers in digits only, short
400 messages for bad input, and the OpenAPI document (400 in place of FastAPI's 422)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BeforeValidator, Field

from app.http.schemas import MAX_ID, ErrorBody


def _digits(value: Any) -> Any:
    """A parameter written as plain ASCII digits (no sign, spaces, decimals or exponents); the
    length cap keeps a 5 000-digit id from ever reaching int()."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit() and len(value) <= 20):
        raise ValueError("must be a whole number written in digits")
    return value


# Bounds go inside the type, before this validator, so that they reach the OpenAPI document
# as minimum/maximum: Annotated[int, Field(ge=…, le=…), DIGITS].
DIGITS = BeforeValidator(_digits)
OrderId = Annotated[int, Field(ge=1, le=MAX_ID, json_schema_extra={"format": "int64"}), DIGITS]
PaymentId = OrderId

_ERROR = {"model": ErrorBody}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {**_ERROR, "description": "A malformed or unknown parameter, or a malformed body."},
    401: {**_ERROR, "description": "No bearer token, or one that is not accepted (see WWW-Authenticate)."},
    403: {**_ERROR, "description": "A valid token without the admin role."},
    404: {**_ERROR, "description": "No such payment (or path)."},
    429: {**_ERROR, "description": "Over the per-client rate limit; see Retry-After."},
    503: {**_ERROR, "description": "A backing service (database, RabbitMQ, gateway, issuer keys) is unavailable."},
}

_NAMED = {
    "orderId": "orderId must be a positive 64-bit integer",
    "paymentId": "paymentId must be a positive 64-bit integer",
    "buyerId": "buyerId must be 1 to 255 characters, none of them control characters",
    "queue": "queue must be 1 to 255 characters, none of them control characters",
    "reason": "reason must be 1 to 500 characters, none of them control characters",
}


def validation_message(problem: RequestValidationError) -> str:
    """The first problem in a few words, never echoing the input (it may be huge or binary)."""
    errors = problem.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where, *rest = [str(part) for part in first.get("loc", ())] or [""]
    kind, text = str(first.get("type", "")), str(first.get("msg", "invalid"))
    name = rest[0] if rest else ""
    if where == "body":
        if kind == "json_invalid":
            return "the body is not valid JSON"
        if not name or kind in ("model_attributes_type", "dict_type", "model_type"):
            return "the body must be a JSON object"
        if kind == "extra_forbidden":
            return f"unknown field {name[:40]!r} in the body"
    if name in _NAMED and kind not in ("enum", "missing"):
        return _NAMED[name]
    text = text.removeprefix("Value error, ")
    return f"{name or where}: {text[:1].lower()}{text[1:]}"[:200]


def describe_api(api: FastAPI) -> None:
    """Generate the OpenAPI document once, with 400 in place of FastAPI's 422 (which we never send)."""

    def document() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(
                title=api.title,
                version=api.version,
                description=(
                    "Operator API of the Foodies payment service. Every route needs a bearer token (a static "
                    "admin token or an OpenID Connect access token with the realm role `admin`) when "
                    "authentication is configured, is rate-limited per client and answers with "
                    '`Cache-Control: no-store`. Errors are `{"error": "...", "status": N}`.'
                ),
                routes=api.routes,
            )
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = document  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema
