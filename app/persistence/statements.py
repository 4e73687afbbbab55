"""The SQL of the per-message path and the reconciler (asyncpg, positional parameters).

Leases: a PROCESSING payment, or a SUCCEEDED one whose refund is owed, is worked on by the
holder of `lease_owner` until `lease_until`; after that anyone may take it over.
"""

from __future__ import annotations

from app.persistence.mapping import COLUMNS

RETURNING = ", ".join(COLUMNS)
UNFINISHED = "('PENDING', 'PROCESSING')"
_INSERT_COLUMNS = """order_id, buyer_id, amount, currency, status, payment_method_type,
    card_last_four, card_brand, card_holder_name, expiration_month, expiration_year,
    event_id, lease_owner, lease_until"""

CLAIM_ONE = f"""
INSERT INTO payments ({_INSERT_COLUMNS})
VALUES ($1, $2, $3, $4, 'PROCESSING', $5, $6, $7, $8, $9, $10, $11, $12, now() + make_interval(secs => $13))
ON CONFLICT (order_id) DO NOTHING
RETURNING id, order_id, created_at, lease_until
"""
CLAIM_MANY = f"""
INSERT INTO payments ({_INSERT_COLUMNS})
SELECT o, b, a, c, 'PROCESSING', t, l4, br, h, m, y, e, k, now() + make_interval(secs => $13)
FROM unnest($1::bigint[], $2::text[], $3::numeric[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::int[], $10::int[], $11::text[], $12::uuid[])
     AS x(o, b, a, c, t, l4, br, h, m, y, e, k)
ORDER BY o
ON CONFLICT (order_id) DO NOTHING
RETURNING id, order_id, created_at, lease_until
"""
BY_ORDERS = f"SELECT {RETURNING}, lease_owner FROM payments WHERE order_id = ANY($1::bigint[])"
BY_IDS = f"SELECT {RETURNING} FROM payments WHERE id = ANY($1::bigint[])"
BY_ORDER = f"SELECT {RETURNING} FROM payments WHERE order_id = $1"
BY_ID = f"SELECT {RETURNING} FROM payments WHERE id = $1"

# An outcome; a success for an order cancelled meanwhile keeps a lease: its refund is owed now.
_RECORD_SET = """status = x.s, transaction_id = x.t, failure_reason = x.r, failure_code = x.c,
    processed_at = now(), updated_at = now(),
    refund_requested_at = CASE WHEN x.s = 'SUCCEEDED' AND p.cancelled_at IS NOT NULL THEN now() END,
    lease_until = CASE WHEN x.s = 'SUCCEEDED' AND p.cancelled_at IS NOT NULL THEN p.lease_until END,
    lease_owner = CASE WHEN x.s = 'SUCCEEDED' AND p.cancelled_at IS NOT NULL THEN p.lease_owner END"""
RECORD_ONE = f"""
UPDATE payments p SET {_RECORD_SET}
FROM (SELECT $1::bigint AS id, $2::text AS s, $3::text AS t, $4::text AS r, $5::text AS c) AS x
WHERE p.id = x.id AND p.status IN {UNFINISHED}
RETURNING p.id, p.processed_at, p.cancelled_at, p.refund_reason, p.refund_requested_at
"""
RECORD_MANY = f"""
UPDATE payments p SET {_RECORD_SET}
FROM (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
      AS u(id, s, t, r, c) ORDER BY id) AS x
WHERE p.id = x.id AND p.status IN {UNFINISHED}
RETURNING p.id, p.processed_at, p.cancelled_at, p.refund_reason, p.refund_requested_at
"""
TAKE_OVER = f"""
UPDATE payments SET lease_owner = $2, lease_until = now() + make_interval(secs => $3), updated_at = now()
WHERE id = $1 AND status IN {UNFINISHED} AND (lease_until IS NULL OR lease_until < now())
RETURNING {RETURNING}
"""
RELEASE = "UPDATE payments SET lease_owner = NULL, lease_until = NULL, updated_at = now() WHERE id = $1"
MARK_PUBLISHED = """
UPDATE payments p SET published_at = now(),
    lease_until = CASE WHEN p.refund_requested_at IS NULL THEN NULL ELSE p.lease_until END
FROM unnest($1::bigint[], $2::text[]) AS x(id, s)
WHERE p.id = x.id AND p.status = x.s AND p.published_at IS NULL
"""
EXPIRED_LEASES = f"""
SELECT id FROM payments
WHERE status IN {UNFINISHED} AND (lease_until IS NULL OR lease_until < now())
ORDER BY lease_until NULLS FIRST LIMIT $1
"""

# --------------------------------------------------------------------- cancellations, refunds
# One statement decides the case atomically: a new CANCELLED row; a charge in flight remembers
# the cancellation; a SUCCEEDED payment owes a refund, leased to this caller; anything else
# (final, or cancelled already) is left alone and returns nothing.
CANCEL = f"""
INSERT INTO payments (order_id, buyer_id, status, cancelled_at, refund_reason, processed_at, published_at)
VALUES ($1, $2, 'CANCELLED', now(), $3, now(), now())
ON CONFLICT (order_id) DO UPDATE SET
    cancelled_at = now(), refund_reason = EXCLUDED.refund_reason, updated_at = now(),
    refund_requested_at = CASE WHEN payments.status = 'SUCCEEDED' THEN now() END,
    lease_owner = CASE WHEN payments.status = 'SUCCEEDED' THEN $4 ELSE payments.lease_owner END,
    lease_until = CASE WHEN payments.status = 'SUCCEEDED' THEN now() + make_interval(secs => $5)
                       ELSE payments.lease_until END
WHERE payments.cancelled_at IS NULL AND payments.status IN ('PENDING', 'PROCESSING', 'SUCCEEDED')
RETURNING {RETURNING}, (xmax = 0) AS inserted
"""
# An operator's refund of a SUCCEEDED payment, unless a refund is being worked on right now.
CLAIM_REFUND = f"""
UPDATE payments SET refund_requested_at = now(), refund_reason = coalesce($2, refund_reason),
    lease_owner = $3, lease_until = now() + make_interval(secs => $4), updated_at = now()
WHERE order_id = $1 AND status = 'SUCCEEDED'
  AND (refund_requested_at IS NULL OR lease_until IS NULL OR lease_until < now())
RETURNING {RETURNING}
"""
TAKE_OVER_REFUND = f"""
UPDATE payments SET lease_owner = $2, lease_until = now() + make_interval(secs => $3), updated_at = now()
WHERE id = $1 AND status = 'SUCCEEDED' AND refund_requested_at IS NOT NULL
  AND (lease_until IS NULL OR lease_until < now())
RETURNING {RETURNING}
"""
OWED_REFUNDS = """
SELECT id FROM payments
WHERE status = 'SUCCEEDED' AND refund_requested_at IS NOT NULL AND (lease_until IS NULL OR lease_until < now())
ORDER BY refund_requested_at LIMIT $1
"""
RECORD_REFUNDED = f"""
UPDATE payments SET status = 'REFUNDED', refund_id = $2, refunded_at = now(), refund_requested_at = NULL,
    lease_owner = NULL, lease_until = NULL, published_at = NULL, updated_at = now()
WHERE id = $1 AND status = 'SUCCEEDED'
RETURNING {RETURNING}
"""
RECORD_REFUND_DECLINED = f"""
UPDATE payments SET refund_requested_at = NULL, lease_owner = NULL, lease_until = NULL, updated_at = now()
WHERE id = $1 AND status = 'SUCCEEDED'
RETURNING {RETURNING}
"""

# ------------------------------------------------------------------------------ reconciler
# Outcomes to announce that the broker never confirmed, older than a grace period (so the
# worker that recorded them has had its chance); claimed with a short lease so that replicas
# do not all publish the same outcome. Never the charge of a cancelled order, never while a
# refund is owed.
CLAIM_UNPUBLISHED = f"""
UPDATE payments SET lease_until = now() + make_interval(secs => $3)
WHERE id IN (
    SELECT id FROM payments
    WHERE published_at IS NULL AND status IN ('SUCCEEDED', 'FAILED', 'REFUNDED')
      AND NOT (status = 'SUCCEEDED' AND cancelled_at IS NOT NULL)
      AND coalesce(refunded_at, processed_at) < now() - make_interval(secs => $1)
      AND (lease_until IS NULL OR lease_until < now())
    ORDER BY processed_at LIMIT $2
    FOR UPDATE SKIP LOCKED)
RETURNING {RETURNING}
"""
BACKLOG = f"""
SELECT
  (SELECT count(*) FROM payments WHERE status IN {UNFINISHED}) AS in_flight,
  (SELECT count(*) FROM payments WHERE status IN {UNFINISHED}
      AND lease_until < now() - make_interval(secs => $1)) AS stuck,
  (SELECT count(*) FROM payments WHERE published_at IS NULL AND status IN ('SUCCEEDED', 'FAILED', 'REFUNDED')
      AND NOT (status = 'SUCCEEDED' AND cancelled_at IS NOT NULL)) AS unpublished
"""
