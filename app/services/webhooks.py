"""Webhook subscriptions and their delivery log: the URL check, the signing secret, the rows, redelivery."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from carrygate.app.errors import NotFound, Unprocessable, get_or_404
from carrygate.app.schemas import WebhookCreate
from carrygate.app.services.pages import Page, paginate
from carrygate.app.settings import Settings
from carrygate.store.api_tables import Webhook, WebhookDelivery
from carrygate.store.vocabulary import DeliveryStatus
from carrygate.workers.webhooks import DeliveryConfig, UnsafeURL, check_url, redeliver


@dataclass(frozen=True)
class Subscribed:
    """The new subscription and its signing secret (returned once, to the request that created it)."""

    webhook: Webhook
    secret: str


def delivery_config(settings: Settings) -> DeliveryConfig:
    """The dispatcher's retry, backoff and SSRF settings."""
    return DeliveryConfig(allow_private=settings.webhook_allow_private, window_seconds=settings.webhook_retry_window_seconds,
                          backoff_seconds=settings.webhook_backoff_seconds, backoff_max_seconds=settings.webhook_backoff_max_seconds,
                          timeout_seconds=settings.webhook_timeout_seconds, poll_seconds=settings.webhook_poll_seconds)


def create_webhook(*, session: Session, body: WebhookCreate, settings: Settings) -> Subscribed:
    """Subscribe `body.url` (refused, 422, by the SSRF guard) with the given or a generated secret."""
    try:
        check_url(body.url, allow_private=settings.webhook_allow_private)
    except UnsafeURL as err:
        raise Unprocessable(str(err)) from err
    secret = body.secret or "whsec_" + secrets.token_urlsafe(32)
    hook = Webhook(url=body.url, secret=secret, events=list(dict.fromkeys(body.events)), fidelity_threshold=body.fidelity_threshold,
                   checkpoint_id=body.checkpoint_id, tag=body.tag, active=True)
    session.add(hook)
    session.commit()
    return Subscribed(hook, secret)


def list_webhooks(*, session: Session) -> list[Webhook]:
    """Every subscription, oldest first."""
    return list(session.execute(select(Webhook).order_by(Webhook.created_at)).scalars().all())


def get_webhook(*, session: Session, webhook_id: str) -> Webhook:
    """The subscription, or a 404."""
    return get_or_404(session, Webhook, webhook_id, "webhook")


def delete_webhook(*, session: Session, webhook_id: str) -> None:
    """Unsubscribe (404 for none); pending deliveries and the delivery log go with it."""
    session.delete(get_webhook(session=session, webhook_id=webhook_id))
    session.commit()


def list_deliveries(*, session: Session, webhook_id: str, status: DeliveryStatus | None, limit: int, offset: int) -> Page[WebhookDelivery]:
    """The webhook's deliveries (404 for no such webhook), newest first, each with its attempt log loaded."""
    get_webhook(session=session, webhook_id=webhook_id)
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    return paginate(session, query, options=[selectinload(WebhookDelivery.attempt_log)],
                    order_by=[WebhookDelivery.created_at.desc(), WebhookDelivery.id], limit=limit, offset=offset)


def redeliver_delivery(*, session: Session, webhook_id: str, delivery_id: str, settings: Settings) -> WebhookDelivery:
    """Queue the delivery again with a fresh retry window; 404 unless it belongs to this webhook."""
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.webhook_id != webhook_id:
        raise NotFound(f"delivery {delivery_id} of webhook {webhook_id} not found")
    redeliver(session, delivery, delivery_config(settings))
    session.refresh(delivery)
    return delivery
