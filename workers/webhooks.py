"""Webhooks: the outbox of job events, signed JSON deliveries, retries with exponential backoff, SSRF guard.

Outbox. `enqueue_job_events` runs inside the transaction that stores a job's verdict (or marks it
failed): one `webhook_deliveries` row per matching subscription and event. The event id is derived
from (job, event), and (webhook_id, event_id) is unique, so a re-run job never queues an event twice;
if the transaction rolls back, no event escapes.

Delivery. A dispatcher (a thread in the API process, or the `carrygate.deliver_webhooks` Celery task)
claims due rows with a conditional UPDATE (several dispatchers never send the same attempt), POSTs
the JSON body and logs every attempt. Non-2xx answers and connection errors are retried after
`backoff * 2**(n-1)` seconds (capped) until the retry window since the event closes; then the delivery
is `failed` (it can still be redelivered by hand). Redirects are not followed.

Signature. Header `Carrygate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`.
Receivers recompute the HMAC over the raw body, compare in constant time, and reject old timestamps
(`verify_signature` is the reference implementation). `Carrygate-Event-Id` is the idempotency id: the
same event (also when redelivered) always carries the same id.

SSRF. Only http(s) URLs; unless `allow_private`, every address the host resolves to must be public
(not loopback, private, link-local, multicast, reserved or unspecified; IPv4-mapped IPv6 included).
Checked when a subscription is created and again before each attempt (DNS may change).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from carrygate.store.api_tables import Webhook, WebhookAttempt, WebhookDelivery
from carrygate.store.tables import utcnow
from carrygate.store.vocabulary import JobKind

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Carrygate-Signature"
EVENT_ID_HEADER = "Carrygate-Event-Id"
EVENT_HEADER = "Carrygate-Event"
DEFAULT_WINDOW_SECONDS = 24 * 3600.0
RESOLVE_TIMEOUT_SECONDS = 3.0


# -- signatures -------------------------------------------------------------------------------------
def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `Carrygate-Signature` header value for `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, body: bytes, header: str, *, tolerance_seconds: float = 300.0, now: float | None = None) -> bool:
    """A receiver's check: a `v1` HMAC over `"<t>." + body` matches and `t` is within the tolerance."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_seconds:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


# -- URL safety ---------------------------------------------------------------------------------------
class UnsafeURL(ValueError):
    """A webhook URL refused by the scheme or SSRF checks; the message says why."""


Resolver = Callable[[str, int], list[str]]
_resolver_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


def resolve_host(host: str, port: int) -> list[str]:
    """All addresses of `host` (getaddrinfo in a thread, so an unreachable DNS server costs at most a few seconds)."""
    future = _resolver_pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=RESOLVE_TIMEOUT_SECONDS)
    except concurrent.futures.TimeoutError as err:
        raise UnsafeURL(f"url: resolving {host!r} timed out") from err
    except (OSError, UnicodeError) as err:
        raise UnsafeURL(f"url: cannot resolve {host!r}: {err}") from err
    return [str(info[4][0]) for info in infos]


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
                or not ip.is_global)


def check_url(url: str, *, allow_private: bool = False, resolve: Resolver = resolve_host) -> None:
    """Raise `UnsafeURL` unless `url` is http(s) with a host and (unless allowed) resolves only to public addresses."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:
        raise UnsafeURL(f"url: not a valid URL: {err}") from err
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL(f"url: scheme {parts.scheme!r} is not allowed (http or https only)")
    host = parts.hostname
    if not host:
        raise UnsafeURL("url: no host")
    if allow_private:
        return
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = resolve(host, port)
    if not addresses:
        raise UnsafeURL(f"url: {host!r} resolves to no address")
    blocked = [a for a in addresses if not _public(a)]
    if blocked:
        raise UnsafeURL(f"url: {host!r} resolves to a non-public address ({', '.join(blocked)}); "
                        "set CARRYGATE_WEBHOOK_ALLOW_PRIVATE=true to allow internal receivers")


# -- the outbox -----------------------------------------------------------------------------------------
def event_id(job_id: str, event: str) -> str:
    """The idempotency id of one event of one job (the same for every subscription and redelivery)."""
    return "evt_" + hashlib.sha256(f"{job_id}:{event}".encode()).hexdigest()[:32]


def _fidelity_means(result: dict[str, Any] | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for candidate in (result or {}).get("candidates", []):
        fidelity = candidate.get("fidelity") or {}
        mean = fidelity.get("mean")
        out[str(candidate.get("name"))] = float(mean) if isinstance(mean, int | float) and not isinstance(mean, bool) else None
    return out


def _evaluation_events(hook: Webhook, status: str, decision: str | None,
                       fidelity: dict[str, float | None]) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    if status == "succeeded" and "job.succeeded" in hook.events:
        events.append(("job.succeeded", {}))
    if status == "failed" and "job.failed" in hook.events:
        events.append(("job.failed", {}))
    if status == "succeeded" and decision == "no_go" and "verdict.no_go" in hook.events:
        events.append(("verdict.no_go", {}))
    if status == "succeeded" and "fidelity.below_threshold" in hook.events and hook.fidelity_threshold is not None:
        below = sorted(name for name, mean in fidelity.items() if mean is None or mean < hook.fidelity_threshold)
        if below:
            events.append(("fidelity.below_threshold", {"threshold": hook.fidelity_threshold, "below": below}))
    return events


def _recommendation_events(hook: Webhook, status: str, recommendation: dict[str, Any] | None) -> list[tuple[str, dict[str, Any]]]:
    """A recommendation's events: `recommendation.ready` when it succeeded, `recommendation.failed` when not."""
    if status == "succeeded" and "recommendation.ready" in hook.events:
        return [("recommendation.ready", {"recommendation": recommendation})]
    if status == "failed" and "recommendation.failed" in hook.events:
        return [("recommendation.failed", {})]
    return []


def enqueue_job_events(session: Session, *, job_id: str, checkpoint_id: str, tags: Iterable[str], status: str,
                       error: str | None = None, decision: str | None = None, reasons: Iterable[str] = (),
                       result: dict[str, Any] | None = None, kind: JobKind = "evaluate",
                       recommendation: dict[str, Any] | None = None) -> int:
    """Queue the events of a finished job for every matching subscription, in the caller's transaction.

    Evaluations: `job.succeeded` / `job.failed`; `verdict.no_go` when the decision is no_go;
    `fidelity.below_threshold` when some candidate's mean fidelity is below the subscription's threshold
    (a candidate without a finite fidelity counts as below). Recommendations (`kind` "recommend"):
    `recommendation.ready` (with the `recommendation` summary) / `recommendation.failed`.
    Returns the number of rows queued.
    """
    tags = list(tags)
    webhooks = session.execute(select(Webhook).where(Webhook.active.is_(True))).scalars().all()
    if not webhooks:
        return 0
    fidelity = _fidelity_means(result)
    at = utcnow()
    base = {"job": {"id": job_id, "kind": kind, "status": status, "checkpoint_id": checkpoint_id, "tags": tags, "error": error},
            "verdict": {"decision": decision, "reasons": list(reasons)} if decision else None}
    if kind == "evaluate":
        base["fidelity_mean"] = fidelity
    queued = 0
    for hook in webhooks:
        if (hook.checkpoint_id and hook.checkpoint_id != checkpoint_id) or (hook.tag and hook.tag not in tags):
            continue
        if kind == "recommend":
            events = _recommendation_events(hook, status, recommendation)
        else:
            events = _evaluation_events(hook, status, decision, fidelity)
        for event, extra in events:
            eid = event_id(job_id, event)
            payload = {"id": eid, "type": event, "created_at": at.isoformat(), "webhook_id": hook.id, **base, **extra}
            session.add(WebhookDelivery(webhook_id=hook.id, event_id=eid, event=event, job_id=job_id, payload=payload,
                                        next_attempt_at=at, expires_at=at + timedelta(seconds=DEFAULT_WINDOW_SECONDS), created_at=at))
            queued += 1
    return queued


# -- delivery ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeliveryConfig:
    allow_private: bool = False
    window_seconds: float = DEFAULT_WINDOW_SECONDS
    backoff_seconds: float = 10.0
    backoff_max_seconds: float = 900.0
    timeout_seconds: float = 10.0
    poll_seconds: float = 1.0

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt: 1x, 2x, 4x ... the base, capped."""
        return min(self.backoff_max_seconds, self.backoff_seconds * 2 ** max(0, attempts - 1))


def claim_due(session: Session, config: DeliveryConfig, limit: int = 20) -> list[str]:
    """Claim due pending deliveries: each is pushed past the attempt's timeout so no other dispatcher takes it."""
    at = utcnow()
    ids = session.execute(select(WebhookDelivery.id).where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= at)
                          .order_by(WebhookDelivery.next_attempt_at).limit(limit)).scalars().all()
    hold = at + timedelta(seconds=config.timeout_seconds + 30)
    claimed = []
    for delivery_id in ids:
        won = session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
                                                            WebhookDelivery.next_attempt_at <= at)
                              .values(next_attempt_at=hold).execution_options(synchronize_session=False))
        if won.rowcount == 1:
            claimed.append(delivery_id)
    session.commit()
    return claimed


def body_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def attempt_delivery(factory: sessionmaker[Session], delivery_id: str, config: DeliveryConfig, client: httpx.Client,
                     resolve: Resolver = resolve_host) -> str:
    """One HTTP attempt of a claimed delivery; logs it and schedules the next. Returns the new status."""
    with factory() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.status != "pending":
            return "gone"
        hook = session.get(Webhook, delivery.webhook_id)
        if hook is None:
            return "gone"
        url, secret, payload = hook.url, hook.secret, delivery.payload
        if delivery.attempts == 0:  # the window is the dispatcher's setting, counted from the event
            delivery.expires_at = delivery.created_at + timedelta(seconds=config.window_seconds)
            session.commit()
    body = body_bytes(payload)
    started, status_code, error = time.monotonic(), None, None
    try:
        check_url(url, allow_private=config.allow_private, resolve=resolve)
        timestamp = int(time.time())
        response = client.post(url, content=body, headers={
            "Content-Type": "application/json", "User-Agent": "carrygate-webhooks/1", SIGNATURE_HEADER: sign(secret, body, timestamp),
            EVENT_ID_HEADER: payload["id"], EVENT_HEADER: payload["type"]})
        status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}: {response.text[:200]}"
    except UnsafeURL as err:
        error = str(err)
    except httpx.HTTPError as err:
        error = f"{type(err).__name__}: {err}"[:500]
    duration_ms = (time.monotonic() - started) * 1000
    at = utcnow()
    with factory() as session:
        delivery = session.get_one(WebhookDelivery, delivery_id)
        delivery.attempts += 1
        session.add(WebhookAttempt(delivery_id=delivery_id, number=delivery.attempts, at=at, status_code=status_code,
                                   error=error, duration_ms=round(duration_ms, 1)))
        delivery.last_status_code, delivery.last_error = status_code, error
        if error is None:
            delivery.status, delivery.delivered_at = "delivered", at
        else:
            retry_at = at + timedelta(seconds=config.delay(delivery.attempts))
            if retry_at > delivery.expires_at:
                delivery.status = "failed"
            else:
                delivery.next_attempt_at = retry_at
        try:
            session.commit()
        except IntegrityError:  # a concurrent dispatcher logged this attempt number; its record stands
            session.rollback()
            return "conflict"
        return delivery.status


def deliver_due(factory: sessionmaker[Session], config: DeliveryConfig, client: httpx.Client | None = None) -> int:
    """One pass: attempt every due delivery. Returns how many were attempted."""
    own = client is None
    client = client or httpx.Client(timeout=config.timeout_seconds, follow_redirects=False)
    try:
        with factory() as session:
            ids = claim_due(session, config)
        for delivery_id in ids:
            try:
                attempt_delivery(factory, delivery_id, config, client)
            except Exception:  # one broken row must not stop the others
                log.exception("webhook delivery %s crashed", delivery_id)
        return len(ids)
    finally:
        if own:
            client.close()


def redeliver(session: Session, delivery: WebhookDelivery, config: DeliveryConfig) -> WebhookDelivery:
    """Send a delivery again now (delivered or failed ones too) with a fresh retry window; the event id stays."""
    at = utcnow()
    delivery.status, delivery.next_attempt_at = "pending", at
    delivery.expires_at = at + timedelta(seconds=config.window_seconds)
    session.commit()
    return delivery


class WebhookDispatcher(threading.Thread):
    """Delivers due webhooks every `poll_seconds` until stopped (runs beside the API or a worker)."""

    def __init__(self, factory: sessionmaker[Session], config: DeliveryConfig) -> None:
        super().__init__(daemon=True, name="webhook-dispatcher")
        self.factory, self.config = factory, config
        self._stop_event = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=self.config.timeout_seconds, follow_redirects=False) as client:
            while not self._stop_event.is_set():
                try:
                    busy = deliver_due(self.factory, self.config, client)
                except Exception:  # the database may be briefly away; try again next round
                    log.exception("webhook dispatch pass failed")
                    busy = 0
                if not busy:
                    self._stop_event.wait(self.config.poll_seconds)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        self.join(timeout)
