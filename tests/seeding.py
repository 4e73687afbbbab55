"""Test-only writes through SQLModel: rows in any status without the ledger's lease rules,
to set up listings and lookups (production writes only through app/persistence/ledger.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from app.domain import FailureCode, Payment, PaymentRequest, PaymentStatus
from app.persistence.repository import PaymentRepository
from app.persistence.tables import PaymentRow


class SeedingRepository(PaymentRepository):
    async def create(
        self, request: PaymentRequest, status: PaymentStatus = PaymentStatus.PENDING
    ) -> tuple[Payment, bool]:
        """Insert a payment for the order; if the order already has one, return it unchanged.

        Returns (payment, created). Concurrent creates for one order yield one row.
        """
        method = request.payment_method
        assert method is not None, "seeded payments have a payment method"
        statement = (
            insert(PaymentRow)
            .values(
                order_id=request.order_id,
                buyer_id=request.buyer_id,
                amount=request.amount,
                currency=request.currency,
                status=status.value,
                payment_method_type=method.type.value,
                card_last_four=method.card_last_four,
                card_brand=method.card_brand.value if method.card_brand else None,
                card_holder_name=method.card_holder_name,
                expiration_month=method.expiration_month,
                expiration_year=method.expiration_year,
                event_id=request.event_id,
            )
            .on_conflict_do_nothing(index_elements=["order_id"])
            .returning(PaymentRow.id)
        )
        async with self._sessions() as session:
            new_id = (await session.exec(statement)).scalar_one_or_none()  # type: ignore[call-overload]  # sqlmodel types exec() for selects only
            await session.commit()
        if new_id is not None:
            created = await self.find_by_id(new_id)
            assert created is not None
            return created, True
        existing = await self.find_by_order_id(request.order_id)
        assert existing is not None
        return existing, False

    async def find_by_buyer_id(self, buyer_id: str, limit: int = 50, offset: int = 0) -> list[Payment]:
        return await self.list(buyer_id=buyer_id, limit=limit, offset=offset)

    async def update_status(
        self,
        payment_id: int,
        status: PaymentStatus,
        *,
        transaction_id: str | None = None,
        failure_reason: str | None = None,
        failure_code: FailureCode | None = None,
    ) -> Payment | None:
        now = datetime.now(UTC)
        values: dict[str, object] = {"status": status.value, "updated_at": now}
        if status.is_final:
            values |= {
                "processed_at": now,
                "transaction_id": transaction_id,
                "failure_reason": failure_reason,
                "failure_code": failure_code.value if failure_code else None,
                "lease_until": None,
                "lease_owner": None,
            }
        async with self._sessions() as session:
            await session.exec(sa.update(PaymentRow).where(PaymentRow.id == payment_id).values(**values))  # type: ignore[call-overload]  # as above
            await session.commit()
        return await self.find_by_id(payment_id)
