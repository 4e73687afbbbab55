"""What the parking-lot actions return (previews, listings, replay results), the copy a replay
publishes, and the test-only crash point of a replay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from app.messaging.topology import (
    CATEGORY_HEADER,
    ORIGINAL_QUEUE_HEADER,
    PREVIOUS_REASON_HEADER,
    REJECTED_AT_HEADER,
    REJECTION_HEADER,
)

REPLAY_COUNT_HEADER = "x-replay-count"
PREVIEW_BYTES = 256
# Set by the parking lot; meaningless on a message back in its consumed queue.
_PARKING_HEADERS = (REJECTED_AT_HEADER, ORIGINAL_QUEUE_HEADER, PREVIOUS_REASON_HEADER)


@dataclass(frozen=True, slots=True)
class ParkedMessage:
    """A parked message as a listing shows it: never more of the body than the preview."""

    reason: str | None
    category: str | None
    parked_at: str | None
    body_size: int
    body_preview: str
    message_id: str | None
    content_type: str | None
    previous_reason: str | None
    replay_count: int

    @classmethod
    def of(cls, message: AbstractIncomingMessage, preview_bytes: int = PREVIEW_BYTES) -> ParkedMessage:
        headers = message.headers or {}
        return cls(
            reason=_text(headers.get(REJECTION_HEADER)),
            category=_text(headers.get(CATEGORY_HEADER)),
            parked_at=_text(headers.get(REJECTED_AT_HEADER)),
            body_size=len(message.body),
            # bytes(...) copies the slice, so the preview does not keep the whole body alive.
            body_preview=bytes(message.body[:preview_bytes]).decode("utf-8", errors="replace"),
            message_id=message.message_id,
            content_type=message.content_type,
            previous_reason=_text(headers.get(PREVIOUS_REASON_HEADER)),
            replay_count=_int(headers.get(REPLAY_COUNT_HEADER)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "category": self.category,
            "parkedAt": self.parked_at,
            "bodySize": self.body_size,
            "bodyPreview": self.body_preview,
            "messageId": self.message_id,
            "contentType": self.content_type,
            "previousReason": self.previous_reason,
            "replayCount": self.replay_count,
        }


@dataclass(frozen=True, slots=True)
class DlqListing:
    queue: str  # the parking lot
    count: int  # messages waiting in it
    messages: list[ParkedMessage]

    def to_json(self) -> dict[str, Any]:
        return {"queue": self.queue, "count": self.count, "messages": [m.to_json() for m in self.messages]}


@dataclass(frozen=True, slots=True)
class ReplayResult:
    queue: str  # the parking lot
    target: str  # the consumed queue
    replayed: int
    remaining: int  # left in the parking lot afterwards (including any that parked again)

    def to_json(self) -> dict[str, Any]:
        return {"queue": self.queue, "target": self.target, "replayed": self.replayed, "remaining": self.remaining}


def replay_copy(message: AbstractIncomingMessage) -> aio_pika.Message:
    """The copy a replay publishes: same body and properties, parking headers dropped, the last
    reason kept as `x-previous-rejection-reason` and the replay counted."""
    original = message.headers or {}
    headers: dict[str, Any] = {
        key: value
        for key, value in original.items()
        if not key.startswith("x-rejection") and key not in _PARKING_HEADERS
    }
    previous = original.get(REJECTION_HEADER, original.get(PREVIOUS_REASON_HEADER))
    if previous is not None:
        headers[PREVIOUS_REASON_HEADER] = previous
    headers[REPLAY_COUNT_HEADER] = _int(original.get(REPLAY_COUNT_HEADER)) + 1
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
