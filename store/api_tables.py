"""API keys and webhook subscriptions, deliveries and attempts (revision 0002), and the per-key submission
rate limit's sliding log (revision 0007), on the job tables' metadata.

The API writes keys and subscriptions; the workers write deliveries in the transaction that finishes a
job (the outbox, `workers/webhooks.py`), and the webhook dispatcher sends them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from carrygate.store.tables import Base, JSONValue, UTCDateTime, in_values, new_id, utcnow
from carrygate.store.vocabulary import API_SCOPES, DELIVERY_STATUSES, WEBHOOK_EVENTS

__all__ = ["ApiKey", "RateLimitHit", "Webhook", "WebhookDelivery", "WebhookAttempt", "API_SCOPES", "WEBHOOK_EVENTS",
           "DELIVERY_STATUSES"]


class ApiKey(Base):
    """An API key: only the SHA-256 of the secret is stored; `prefix` is the visible part that names it."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSONValue, default=list)
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RateLimitHit(Base):
    """One submission an API key made within the last minute: the rate limit's sliding log, shared by every
    API process (`app/ratelimit.py`). The key's next submission deletes its rows older than the window.

    `key_id` is the key's id (or `settings:N` for a key from CARRYGATE_API_KEYS), without a foreign key:
    those keys have no row. `at` is wall-clock unix seconds.
    """

    __tablename__ = "rate_limit_hits"
    __table_args__ = (Index("ix_rate_limit_hits_key_id_at", "key_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float)


class Webhook(Base):
    """A subscription: events to send to `url`, signed with `secret`, optionally only for one checkpoint or tag.

    The secret is kept in clear: the service needs it to sign every delivery (as GitHub and Stripe do).
    """

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(256))
    events: Mapped[list[str]] = mapped_column(JSONValue, default=list)
    fidelity_threshold: Mapped[float | None] = mapped_column(Float)
    checkpoint_id: Mapped[str | None] = mapped_column(String(36))
    tag: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One event for one subscription (the outbox row), written in the transaction that finished the job.

    `event_id` is the idempotency id the receiver sees; (webhook_id, event_id) is unique, so an event is
    queued once per subscription however often the job's result is written.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id"),
        CheckConstraint(in_values("status", DELIVERY_STATUSES), name="status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(36))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONValue)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    attempt_log: Mapped[list[WebhookAttempt]] = relationship(
        back_populates="delivery", order_by="WebhookAttempt.number", cascade="all, delete-orphan", passive_deletes=True
    )


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery: when, the response status (or the connection error), how long."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "number"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)

    delivery: Mapped[WebhookDelivery] = relationship(back_populates="attempt_log")
