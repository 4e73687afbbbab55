"""The payment repository on SQLModel (async SQLAlchemy over asyncpg): the admin API's
lookups and listings. Read-only: every write goes through the ledger (`ledger.py`), which
keeps the lease rules."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.domain import Payment, PaymentStatus
from app.persistence.mapping import payment_from_row
from app.persistence.tables import PaymentRow


def _to_domain(row: PaymentRow) -> Payment:
    return payment_from_row(row.model_dump())


def make_engine(url: str, pool_size: int = 5) -> AsyncEngine:
    # hide_parameters: an error's text never carries the statement's parameters (buyer ids, card data).
    return create_async_engine(url, pool_size=pool_size, max_overflow=2, pool_pre_ping=True, hide_parameters=True)


class PaymentRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)

    async def find_by_id(self, payment_id: int) -> Payment | None:
        async with self._sessions() as session:
            row = await session.get(PaymentRow, payment_id)
            return _to_domain(row) if row else None

    async def find_by_order_id(self, order_id: int) -> Payment | None:
        async with self._sessions() as session:
            row = (await session.exec(select(PaymentRow).where(PaymentRow.order_id == order_id))).first()
            return _to_domain(row) if row else None

    async def list(
        self,
        *,
        buyer_id: str | None = None,
        status: PaymentStatus | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Payment]:
        """Newest first."""
        query = select(PaymentRow)
        if buyer_id is not None:
            query = query.where(PaymentRow.buyer_id == buyer_id)
        if status is not None:
            query = query.where(PaymentRow.status == status.value)
        query = query.order_by(col(PaymentRow.created_at).desc(), col(PaymentRow.id).desc()).limit(limit).offset(offset)
        async with self._sessions() as session:
            return [_to_domain(row) for row in (await session.exec(query)).all()]
