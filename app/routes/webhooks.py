"""Webhook subscriptions (admin scope): create, list, read, delete; delivery log; manual redelivery."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from carrygate.app.deps import SessionDep, SettingsDep, require_scope
from carrygate.app.errors import NotFound, Unprocessable, get_or_404
from carrygate.app.schemas import WebhookCreate, WebhookCreated, WebhookDeliveryList, WebhookDeliveryRead, WebhookList, WebhookRead
from carrygate.app.settings import Settings
from carrygate.store.api_tables import Webhook, WebhookDelivery
from carrygate.store.vocabulary import DeliveryStatus
from carrygate.workers.webhooks import DeliveryConfig, UnsafeURL, check_url, redeliver

router = APIRouter(prefix="/webhooks", tags=["webhooks"], dependencies=[require_scope("admin")],
                   responses={401: {"description": "no or an invalid API key"}, 403: {"description": "the key lacks the admin scope"}})


def delivery_config(settings: Settings) -> DeliveryConfig:
    return DeliveryConfig(allow_private=settings.webhook_allow_private, window_seconds=settings.webhook_retry_window_seconds,
                          backoff_seconds=settings.webhook_backoff_seconds, backoff_max_seconds=settings.webhook_backoff_max_seconds,
                          timeout_seconds=settings.webhook_timeout_seconds, poll_seconds=settings.webhook_poll_seconds)


def _get(session: Session, webhook_id: str) -> Webhook:
    return get_or_404(session, Webhook, webhook_id, "webhook")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookCreated,
             responses={422: {"description": "malformed, or a URL refused (scheme, or a private address: SSRF guard)"}})
def create_webhook(body: WebhookCreate, session: SessionDep, settings: SettingsDep) -> WebhookCreated:
    """Subscribe a URL to events. The signing secret is returned once (generated when not given)."""
    try:
        check_url(body.url, allow_private=settings.webhook_allow_private)
    except UnsafeURL as err:
        raise Unprocessable(str(err)) from err
    secret = body.secret or "whsec_" + secrets.token_urlsafe(32)
    hook = Webhook(url=body.url, secret=secret, events=list(dict.fromkeys(body.events)), fidelity_threshold=body.fidelity_threshold,
                   checkpoint_id=body.checkpoint_id, tag=body.tag, active=True)
    session.add(hook)
    session.commit()
    return WebhookCreated.model_validate(WebhookRead.model_validate(hook).model_dump() | {"secret": secret})


@router.get("", response_model=WebhookList)
def list_webhooks(session: SessionDep) -> WebhookList:
    rows = session.execute(select(Webhook).order_by(Webhook.created_at)).scalars().all()
    return WebhookList(data=[WebhookRead.model_validate(r) for r in rows], count=len(rows))


@router.get("/{webhook_id}", response_model=WebhookRead, responses={404: {"description": "no such webhook"}})
def get_webhook(webhook_id: str, session: SessionDep) -> WebhookRead:
    return WebhookRead.model_validate(_get(session, webhook_id))


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={404: {"description": "no such webhook"}})
def delete_webhook(webhook_id: str, session: SessionDep) -> Response:
    """Unsubscribe; pending deliveries and the delivery log go with it."""
    session.delete(_get(session, webhook_id))
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", response_model=WebhookDeliveryList, responses={404: {"description": "no such webhook"}})
def list_deliveries(webhook_id: str, session: SessionDep, status: DeliveryStatus | None = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50,
                    offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> WebhookDeliveryList:
    """Deliveries newest first, each with every attempt (time, HTTP status or error, duration)."""
    _get(session, webhook_id)
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    count = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(query.options(selectinload(WebhookDelivery.attempt_log))
                           .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id).limit(limit).offset(offset)).scalars()
    return WebhookDeliveryList(data=[WebhookDeliveryRead.model_validate(r) for r in rows], count=count)


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", status_code=status.HTTP_202_ACCEPTED,
             response_model=WebhookDeliveryRead, responses={404: {"description": "no such webhook or delivery"}})
def redeliver_delivery(webhook_id: str, delivery_id: str, session: SessionDep, settings: SettingsDep) -> WebhookDeliveryRead:
    """Send the event again (same event id, so receivers can drop duplicates) with a fresh retry window."""
    delivery = session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.webhook_id != webhook_id:
        raise NotFound(f"delivery {delivery_id} of webhook {webhook_id} not found")
    redeliver(session, delivery, delivery_config(settings))
    session.refresh(delivery)
    return WebhookDeliveryRead.model_validate(delivery)
