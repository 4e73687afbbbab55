"""What a chaos run sends: the orders (every test card, several currencies), the cancellations and their moments,
the deliberate poison messages, and the outcome the card table promises for each order."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

# Card table of the service (by the card's last four): the final status and failure code of a charge.
CARD_OUTCOMES: dict[str, tuple[str, str | None]] = {
    "0000": ("FAILED", "CARD_DECLINED"),
    "0001": ("FAILED", "INSUFFICIENT_FUNDS"),
    "0002": ("FAILED", "CARD_EXPIRED"),
    "3333": ("SUCCEEDED", None),  # two transient errors, then success
    "6666": ("FAILED", "TIMEOUT"),  # the gateway never answers
    "7777": ("FAILED", "FRAUD_SUSPECTED"),
    "8888": ("SUCCEEDED", None),  # its refund is declined
    "9999": ("FAILED", "GATEWAY_ERROR"),  # a transient error on every attempt
}
FAILURE_REASONS = {
    "CARD_DECLINED": "Card declined",
    "INSUFFICIENT_FUNDS": "Insufficient funds",
    "CARD_EXPIRED": "Card expired",
    "TIMEOUT": "Payment gateway timeout",
    "FRAUD_SUSPECTED": "Fraud suspected",
    "GATEWAY_ERROR": "Payment gateway unavailable",
}
SUCCESS_CARDS = ("4242", "1111", "4444", "0005", "2222", None)  # well-known test numbers and no card at all
REFUND_DECLINED_CARD = "8888"
# currency -> (ISO 4217 exponent, sample amounts)
CURRENCIES = {"USD": (2, ("49.99", "12.50", "7.00")), "EUR": (2, ("19.90", "250.00")), "JPY": (0, ("1200", "980"))}
# When the cancellation is sent: before the stock-confirmed event; while the charge is in flight (its row seen
# PROCESSING); after its outcome was published.
MOMENTS = ("before", "during", "after")
CANCEL_REASON = "Customer changed their mind"
POISON = {  # queue role -> bodies that cannot be read (no usable orderId): each must end in that parking lot
    "stock_confirmed": (b"not json {", b'{"orderId": "abc", "totalAmount": "1.00"}', b"[1, 2, 3]"),
    "order_cancelled": (b'{"reason": "no order id"}', b"\xff\xfe\x00"),
}


@dataclass(frozen=True, slots=True)
class Order:
    order_id: int
    card: str | None
    amount: str
    currency: str
    at: float  # seconds after the start of publishing
    cancel: str | None = None  # one of MOMENTS
    cancel_at: float | None = None  # only for "before": the others follow what they observe

    @property
    def minor_units(self) -> int:
        exponent = CURRENCIES[self.currency][0]
        return int(Decimal(self.amount).scaleb(exponent))

    @property
    def expected(self) -> tuple[str, str | None]:
        """(status, failure code) the card table gives when the order is not cancelled."""
        return CARD_OUTCOMES.get(self.card or "", ("SUCCEEDED", None))

    def stock_confirmed(self) -> bytes:
        """The OrderStockConfirmedEvent the ordering service would send."""
        method = {
            "type": "CREDIT_CARD",
            "cardLastFour": self.card,
            "cardBrand": "VISA",
            "cardHolderName": "Chaos Tester",
            "expirationMonth": 12,
            "expirationYear": 2030,
        }
        body = {
            "eventId": str(uuid.uuid4()),
            "orderId": self.order_id,
            "buyerId": f"buyer-{self.order_id % 97}",
            "totalAmount": self.amount,
            "currency": self.currency,
            "paymentMethod": method,
            "occurredAt": _now(),
        }
        return json.dumps(body).encode()

    def cancelled(self) -> bytes:
        body = {"orderId": self.order_id, "buyerId": f"buyer-{self.order_id % 97}", "reason": CANCEL_REASON}
        return json.dumps({**body, "cancelledAt": _now()}).encode()


@dataclass(frozen=True, slots=True)
class Send:
    """One message of the timeline."""

    at: float
    role: str  # stock_confirmed / order_cancelled
    body: bytes
    order_id: int | None  # None: poison


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_orders(
    count: int, duration_s: float, cancel_share: float, special_share: float, rng: random.Random
) -> list[Order]:
    """`count` orders spread evenly over `duration_s`: each special card at least once (more with
    `special_share` each), successes otherwise; `cancel_share` of them cancelled at a random moment,
    at least one cancellation of each moment, of a refund-declined card and of a failing card."""
    specials = [card for card in CARD_OUTCOMES for _ in range(max(1, round(count * special_share)))]
    if len(specials) > count:
        raise ValueError(f"--orders must be at least {len(specials)} to hold every test card")
    cards: list[str | None] = specials + [rng.choice(SUCCESS_CARDS) for _ in range(count - len(specials))]
    rng.shuffle(cards)
    base = int(datetime.now(UTC).timestamp() * 1000) * 1000
    cancelled = set(rng.sample(range(count), max(len(MOMENTS), round(count * cancel_share))))
    for wanted in (REFUND_DECLINED_CARD, "0000"):  # a declined refund and a cancel after a failed charge
        if not any(cards[i] == wanted for i in cancelled):
            cancelled.add(cards.index(wanted))
    moments = {i: MOMENTS[n % len(MOMENTS)] for n, i in enumerate(sorted(cancelled, key=lambda _: rng.random()))}
    orders = []
    for i, card in enumerate(cards):
        currency = rng.choice(tuple(CURRENCIES))
        at = duration_s * i / count
        moment = moments.get(i)
        if card in (REFUND_DECLINED_CARD, "0000") and i in cancelled and moment == "before":
            moment = "after"  # keep the cases these were added for
        cancel_at = _cancel_time(at, moment, rng) if moment else None
        amount = rng.choice(CURRENCIES[currency][1])
        orders.append(Order(base + i, card, amount, currency, at, moment, cancel_at))
    return orders


def _cancel_time(at: float, moment: str, rng: random.Random) -> float | None:
    """When a cancellation sent "before" goes out; the others wait for what they follow (see chaos_bus)."""
    return max(0.0, at - rng.uniform(0.3, 1.5)) if moment == "before" else None


def timeline(orders: list[Order], duration_s: float, rng: random.Random) -> list[Send]:
    """Every message of the run in the order of its time: orders, cancellations and poison."""
    sends = [Send(o.at, "stock_confirmed", b"", o.order_id) for o in orders]
    sends += [Send(o.cancel_at, "order_cancelled", b"", o.order_id) for o in orders if o.cancel_at is not None]
    for role, bodies in POISON.items():
        sends += [Send(rng.uniform(0, duration_s), role, body, None) for body in bodies]
    return sorted(sends, key=lambda s: s.at)
