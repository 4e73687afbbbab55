"""The audit of a chaos run, from the outside: what the gateway captured and refunded, the final rows in the
database, the outcome events seen on the exchange and the parking lots, held against the orders that were sent.

Rules (each breach is a violation, counted by kind with a few examples):
- gateway: at most one captured charge and one refund per order; a charge captured exactly for the orders whose row
  is SUCCEEDED or REFUNDED (with the same transaction id), a refund exactly for the REFUNDED ones (same refund id);
  no charge request at all for a CANCELLED order; each charge request in the order's minor units, lower-case
  currency, without the card holder's name;
- database: one row per order, none PENDING/PROCESSING, no refund still owed; the status and failure code the card
  table gives (a cancelled order: CANCELLED, or REFUNDED for a successful card, FAILED with its code for a failing
  card, SUCCEEDED for the refund-declined card 8888; the cancellation recorded unless the charge had failed
  already); GATEWAY_ERROR only for card 9999 and TIMEOUT only for 6666
  (no order failed because of the outage, a slow call or any gateway trouble but its own card); REFUNDED rows with
  refund id and time;
- events: exactly the contract's keys; per order and routing key one eventId (a repeat carries the same eventId
  and body); SUCCEEDED → payment.succeeded, FAILED → payment.failed with the row's code, REFUNDED → payment.refunded
  with the row's refund id, CANCELLED → nothing. payment.succeeded for a cancelled order only when the
  cancellation was recorded after the success (cancelled_at > processed_at); a cancellation recorded before the
  charge finished (cancelled_at <= processed_at) allows no payment.succeeded at all;
- parking lots: exactly the poison messages sent, each in the lot of the queue it was sent to.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

from chaos_plan import CARD_OUTCOMES, FAILURE_REASONS, REFUND_DECLINED_CARD, Order

KEYS = {
    "payment.succeeded": {"eventId", "orderId", "paymentId", "transactionId", "amount", "currency", "processedAt"},
    "payment.failed": {"eventId", "orderId", "failureReason", "failureCode", "occurredAt"},
    "payment.refunded": {
        *("eventId", "orderId", "paymentId", "transactionId", "refundId", "amount", "currency", "reason"),
        "refundedAt",
    },
}
OUTAGE_CODES = {"GATEWAY_ERROR": "9999", "TIMEOUT": "6666"}  # the only card allowed to fail with each


class Findings:
    def __init__(self, examples: int = 5) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)
        self._limit = examples

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < self._limit:
            self.examples[kind].append(message)


def cancel_case(order: Order, row: dict[str, Any]) -> str | None:
    """Which row of the cancellation table the service applied, read from the final row."""
    if order.cancel is None:
        return None
    if row["cancelled_at"] is None:  # only a failed payment ignores a cancellation
        return "after_failure" if row["status"] == "FAILED" else "not_recorded"
    status, during = row["status"], row["processed_at"] is None or row["cancelled_at"] <= row["processed_at"]
    if status == "CANCELLED":
        return "before_charge"
    if status == "REFUNDED":
        return "in_flight_refunded" if during else "after_success_refunded"
    if status == "FAILED":
        return "in_flight_failed" if during else "failed_then_cancelled"
    return "refund_declined"  # SUCCEEDED although cancelled


def check_rows(orders: list[Order], rows: dict[int, list[dict[str, Any]]], found: Findings) -> None:
    for order in orders:
        matching = rows.get(order.order_id, [])
        if len(matching) != 1:
            found.add("rows_per_order", f"order {order.order_id}: {len(matching)} rows")
            continue
        row = matching[0]
        status, code = row["status"], row["failure_code"]
        if status in ("PENDING", "PROCESSING"):
            found.add("unfinished", f"order {order.order_id} is {status}")
            continue
        if status == "SUCCEEDED" and row["refund_requested_at"] is not None:
            found.add("refund_still_owed", f"order {order.order_id} (card {order.card})")
        by_outage = code in OUTAGE_CODES and order.card != OUTAGE_CODES[code]
        if by_outage:
            found.add("failed_by_gateway_trouble", f"order {order.order_id} card {order.card} failed {code}")
        expected_status, expected_code = order.expected
        if order.cancel is None:
            allowed = {(expected_status, expected_code)}
            if row["cancelled_at"] is not None:
                found.add("cancelled_without_cancel", f"order {order.order_id}")
        else:
            allowed = {("CANCELLED", None)}
            if expected_status == "FAILED":
                allowed.add(("FAILED", expected_code))
            else:
                allowed.add(("SUCCEEDED" if order.card == REFUND_DECLINED_CARD else "REFUNDED", None))
            if row["cancelled_at"] is None and status != "FAILED":  # a cancel after a failure changes nothing
                found.add("cancel_not_recorded", f"order {order.order_id} (sent {order.cancel})")
        if (status, code) not in allowed and not by_outage:
            found.add("outcome_vs_card_table", f"order {order.order_id} card {order.card}: {status} {code}")
        elif status == "FAILED" and row["failure_reason"] != FAILURE_REASONS.get(code or ""):
            found.add("failure_reason", f"order {order.order_id}: {row['failure_reason']!r} for {code}")
        if status == "REFUNDED" and not (row["refund_id"] and row["refunded_at"]):
            found.add("refund_record", f"order {order.order_id}: refund id {row['refund_id']!r}")


def check_gateway(
    orders: list[Order], rows: dict[int, dict[str, Any]], gateway: dict[str, Any], found: Findings
) -> None:
    by_id = {order.order_id: order for order in orders}
    counts = gateway["orders"]
    charges = {entry["idempotencyKey"]: entry for entry in gateway["charges"]}
    refunds = {entry["idempotencyKey"]: entry for entry in gateway["refunds"]}
    for key in charges.keys() | refunds.keys():
        order_id = key.removeprefix("refund-").removeprefix("order-")
        if not order_id.isdigit() or int(order_id) not in by_id:
            found.add("unknown_gateway_key", key)
    for order_id, order in by_id.items():
        row = rows.get(order_id)
        got = counts.get(str(order_id), {"captured": 0, "refunded": 0})
        if got["captured"] > 1 or got["refunded"] > 1:
            found.add("double_money", f"order {order_id}: {got}")
        if row is None:
            continue
        charged, refunded = row["status"] in ("SUCCEEDED", "REFUNDED"), row["status"] == "REFUNDED"
        if got["captured"] != int(charged) or got["refunded"] != int(refunded):
            found.add("gateway_vs_row", f"order {order_id} {row['status']}: gateway {got}")
        charge = charges.get(f"order-{order_id}")
        if row["status"] == "CANCELLED" and charge is not None:
            found.add("cancelled_but_charged", f"order {order_id}: {charge['seen']} charge requests")
        if charge is not None:
            _check_charge_request(order, charge, row, found)
        refund = refunds.get(f"refund-order-{order_id}")
        if refunded and (refund is None or (refund["outcome"] or {}).get("body", {}).get("id") != row["refund_id"]):
            found.add("refund_id_mismatch", f"order {order_id}: row {row['refund_id']!r}")
        if refund is not None and order.cancel is None:
            found.add("refund_without_cancel", f"order {order_id}")


def _check_charge_request(order: Order, charge: dict[str, Any], row: dict[str, Any], found: Findings) -> None:
    request = charge["request"]
    method = request.get("paymentMethod") or {}
    if request.get("amount") != order.minor_units or request.get("currency") != order.currency.lower():
        found.add("charge_request", f"order {order.order_id}: {request.get('amount')} {request.get('currency')}")
    if "cardHolderName" in method:
        found.add("card_holder_sent", f"order {order.order_id}")
    body = (charge["outcome"] or {}).get("body", {})
    if row["status"] in ("SUCCEEDED", "REFUNDED") and body.get("id") != row["transaction_id"]:
        found.add("transaction_id_mismatch", f"order {order.order_id}: row {row['transaction_id']!r}")


def check_events(
    orders: list[Order], rows: dict[int, dict[str, Any]], events: list[tuple[str, bytes]], found: Findings
) -> Counter[str]:
    """Returns the distinct outcome events per routing key (and the number of repeats)."""
    by_order: dict[int, dict[str, dict[str, bytes]]] = defaultdict(lambda: defaultdict(dict))
    tally: Counter[str] = Counter()
    for routing_key, raw in events:
        try:
            body = json.loads(raw)
        except ValueError:
            found.add("event_not_json", f"{routing_key}: {raw[:80]!r}")
            continue
        if set(body) != KEYS.get(routing_key, set()):
            found.add("event_keys", f"{routing_key}: {sorted(body)}")
        seen = by_order[body.get("orderId")][routing_key]
        if body.get("eventId") in seen:
            tally["repeats"] += 1
            if seen[body["eventId"]] != raw:
                found.add("repeat_differs", f"order {body.get('orderId')} {routing_key}")
        seen[body.get("eventId")] = raw
    known = {order.order_id for order in orders}
    for order_id in by_order.keys() - known:
        found.add("event_for_unknown_order", str(order_id))
    for order in orders:
        row = rows.get(order.order_id)
        got = by_order.get(order.order_id, {})
        for routing_key, ids in got.items():
            tally[routing_key] += len(ids)
            if len(ids) > 1:
                found.add("several_event_ids", f"order {order.order_id} {routing_key}: {len(ids)}")
        if row is not None:
            _check_order_events(order, row, {k: json.loads(next(iter(v.values()))) for k, v in got.items()}, found)
    return tally


def _check_order_events(order: Order, row: dict[str, Any], got: dict[str, dict[str, Any]], found: Findings) -> None:
    status, cancelled = row["status"], row["cancelled_at"]
    after_success = cancelled is not None and row["processed_at"] is not None and cancelled > row["processed_at"]
    required = {"SUCCEEDED": "payment.succeeded", "FAILED": "payment.failed", "REFUNDED": "payment.refunded"}
    wanted = required.get(status) if not (status == "SUCCEEDED" and cancelled is not None) else None
    allowed = {wanted} | ({"payment.succeeded"} if status in ("SUCCEEDED", "REFUNDED") and after_success else set())
    if wanted is not None and wanted not in got:
        found.add("outcome_not_published", f"order {order.order_id} {status}")
    for routing_key in got.keys() - allowed:
        kind = "succeeded_after_cancel" if routing_key == "payment.succeeded" else "unexpected_event"
        found.add(kind, f"order {order.order_id} {status} (cancel {order.cancel}): {routing_key}")
    failed, refunded = got.get("payment.failed"), got.get("payment.refunded")
    if failed is not None and status == "FAILED" and failed["failureCode"] != row["failure_code"]:
        found.add("event_vs_row", f"order {order.order_id}: failureCode {failed['failureCode']}")
    if refunded is not None and status == "REFUNDED" and refunded["refundId"] != row["refund_id"]:
        found.add("event_vs_row", f"order {order.order_id}: refundId {refunded['refundId']}")
    for routing_key in ("payment.succeeded", "payment.refunded"):
        body = got.get(routing_key)
        if body is not None and (Decimal(body["amount"]), body["currency"]) != (Decimal(order.amount), order.currency):
            found.add("event_amount", f"order {order.order_id}: {body['amount']} {body['currency']}")


def check_parking(
    sent: dict[str, list[bytes]], parked: dict[str, list[tuple[bytes, dict[str, Any]]]], found: Findings
) -> None:
    for role, bodies in sent.items():
        got = parked.get(role, [])
        missing, extra = Counter(bodies) - Counter(b for b, _ in got), Counter(b for b, _ in got) - Counter(bodies)
        for body in missing.elements():
            found.add("poison_not_parked", f"{role}: {body[:60]!r}")
        for body in extra.elements():
            found.add("parked_unexpectedly", f"{role}: {body[:120]!r}")
        for body, headers in got:
            if not headers.get("x-rejection-reason"):
                found.add("parked_without_reason", f"{role}: {body[:60]!r}")


def audit(
    orders: list[Order],
    rows: dict[int, list[dict[str, Any]]],
    gateway: dict[str, Any],
    events: list[tuple[str, bytes]],
    poison: dict[str, list[bytes]],
    parked: dict[str, list[tuple[bytes, dict[str, Any]]]],
) -> dict[str, Any]:
    """Every check above; returns the counts, the violations by kind and a few examples of each."""
    found = Findings()
    single = {order_id: found_rows[0] for order_id, found_rows in rows.items() if len(found_rows) == 1}
    check_rows(orders, rows, found)
    check_gateway(orders, single, gateway, found)
    published = check_events(orders, single, events, found)
    check_parking(poison, parked, found)
    return {
        "orders": len(orders),
        "cards": dict(Counter(order.card or "none" for order in orders if order.card in CARD_OUTCOMES)),
        "cancellations_sent": dict(Counter(order.cancel for order in orders if order.cancel)),
        "rows": dict(Counter(row["status"] for row in single.values())),
        "cancel_cases": dict(
            Counter(cancel_case(o, single[o.order_id]) for o in orders if o.cancel and o.order_id in single)
        ),
        "failure_codes": dict(Counter(row["failure_code"] for row in single.values() if row["failure_code"])),
        "gateway": {
            **gateway["totals"],
            "charge_keys": len(gateway["charges"]),
            "refund_keys": len(gateway["refunds"]),
        },
        "published": dict(published),
        "deliveries_observed": len(events),
        "parked": {role: len(bodies) for role, bodies in parked.items()},
        "poison_sent": {role: len(bodies) for role, bodies in poison.items()},
        "violations": dict(found.counts),
        "examples": dict(found.examples),
    }
