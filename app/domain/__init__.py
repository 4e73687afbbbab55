"""The payment domain, free of frameworks: payments, statuses, charge results (and money rules)."""

from app.domain.payment import (
    FAILURE_REASONS,
    CardBrand,
    ChargeResult,
    Disposition,
    FailureCode,
    OrderCancellation,
    Payment,
    PaymentMethod,
    PaymentMethodType,
    PaymentRequest,
    PaymentStatus,
    ProcessingResult,
    Rejection,
)

__all__ = [
    "FAILURE_REASONS",
    "CardBrand",
    "ChargeResult",
    "Disposition",
    "FailureCode",
    "OrderCancellation",
    "Payment",
    "PaymentMethod",
    "PaymentMethodType",
    "PaymentRequest",
    "PaymentStatus",
    "ProcessingResult",
    "Rejection",
]
