"""Webhook subscriptions (admin scope): create, list, read, delete; delivery log; manual redelivery."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from carrygate.app.deps import SessionDep, SettingsDep, require_scope
from carrygate.app.schemas import WebhookCreate, WebhookCreated, WebhookDeliveryList, WebhookDeliveryRead, WebhookList, WebhookRead
from carrygate.app.services import webhooks
from carrygate.store.vocabulary import DeliveryStatus

router = APIRouter(prefix="/webhooks", tags=["webhooks"], dependencies=[require_scope("admin")],
                   responses={401: {"description": "no or an invalid API key"}, 403: {"description": "the key lacks the admin scope"}})


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookCreated,
             responses={422: {"description": "malformed, or a URL refused (scheme, or a private address: SSRF guard)"}})
def create_webhook(body: WebhookCreate, session: SessionDep, settings: SettingsDep) -> WebhookCreated:
    """Subscribe a URL to events. The signing secret is returned once (generated when not given)."""
    created = webhooks.create_webhook(session=session, body=body, settings=settings)
    return WebhookCreated.model_validate(WebhookRead.model_validate(created.webhook).model_dump() | {"secret": created.secret})


@router.get("", response_model=WebhookList)
def list_webhooks(session: SessionDep) -> WebhookList:
    rows = webhooks.list_webhooks(session=session)
    return WebhookList(data=[WebhookRead.model_validate(r) for r in rows], count=len(rows))


@router.get("/{webhook_id}", response_model=WebhookRead, responses={404: {"description": "no such webhook"}})
def get_webhook(webhook_id: str, session: SessionDep) -> WebhookRead:
    return WebhookRead.model_validate(webhooks.get_webhook(session=session, webhook_id=webhook_id))


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={404: {"description": "no such webhook"}})
def delete_webhook(webhook_id: str, session: SessionDep) -> Response:
    """Unsubscribe; pending deliveries and the delivery log go with it."""
    webhooks.delete_webhook(session=session, webhook_id=webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries", response_model=WebhookDeliveryList, responses={404: {"description": "no such webhook"}})
def list_deliveries(webhook_id: str, session: SessionDep, status: DeliveryStatus | None = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50,
                    offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> WebhookDeliveryList:
    """Deliveries newest first, each with every attempt (time, HTTP status or error, duration)."""
    page = webhooks.list_deliveries(session=session, webhook_id=webhook_id, status=status, limit=limit, offset=offset)
    return WebhookDeliveryList(data=[WebhookDeliveryRead.model_validate(r) for r in page.rows], count=page.count)


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver", status_code=status.HTTP_202_ACCEPTED,
             response_model=WebhookDeliveryRead, responses={404: {"description": "no such webhook or delivery"}})
def redeliver_delivery(webhook_id: str, delivery_id: str, session: SessionDep, settings: SettingsDep) -> WebhookDeliveryRead:
    """Send the event again (same event id, so receivers can drop duplicates) with a fresh retry window."""
    delivery = webhooks.redeliver_delivery(session=session, webhook_id=webhook_id, delivery_id=delivery_id, settings=settings)
    return WebhookDeliveryRead.model_validate(delivery)
