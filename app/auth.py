"""API keys with scopes: creation, hashing, lookup, the request guard and the per-key submission rate limit.

A key looks like `cg_1a2b3c4d_<43 url-safe characters>` (256 random bits). Only its SHA-256 is stored:
a key with that much entropy needs no slow hash, and the lookup stays one indexed query. The visible
prefix (`cg_1a2b3c4d`) names the key in listings and logs.

Scopes: `read` (GET routes), `submit` (everything that changes state: upload, register, submit, cancel),
`admin` (keys and webhooks). `admin` includes `submit`, and `submit` includes `read`.

Until the first key is created (in the database or in `CARRYGATE_API_KEYS`) the API is open, as the
embedded single-user set-up needs; from then on every route but the health probes needs a key (revoking
every key does not reopen it).
Keys from `CARRYGATE_API_KEYS` (the earlier, unscoped mechanism) keep working and hold every scope.
The submission rate limit's state lives in the database or Redis (`app/ratelimit.py`), so it holds
across the API processes of `carrygate serve --api-workers N`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from fastapi import HTTPException, Request
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from carrygate.store.api_tables import API_SCOPES, ApiKey
from carrygate.store.tables import utcnow

KEY_PREFIX = "cg_"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""Probes stay open: orchestrators call them without credentials."""
DOC_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
"""The API description: behind a `read` key like any GET route, unless `CARRYGATE_PUBLIC_DOCS` opens it."""
SUBMISSION_ROUTES = frozenset({"create_job", "create_recommendation"})
"""Route names counted by the per-key submission rate limit."""
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_KEY_BY_HASH = select(ApiKey.id, ApiKey.name, ApiKey.scopes, ApiKey.rate_limit_per_minute, ApiKey.last_used_at).where(
    ApiKey.key_hash == bindparam("key_hash"), ApiKey.revoked_at.is_(None))
"""The key lookup of every request: the columns the principal needs (not the ORM object), built once."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """-> (the full secret key, its visible prefix)."""
    prefix = KEY_PREFIX + secrets.token_hex(4)
    return f"{prefix}_{secrets.token_urlsafe(32)}", prefix


def grants(scopes: frozenset[str] | set[str] | list[str], needed: str) -> bool:
    """Whether `scopes` allow `needed` (admin > submit > read)."""
    held = set(scopes)
    return "admin" in held or needed in held or (needed == "read" and "submit" in held)


def normalize_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(API_SCOPES))
    if unknown:
        raise ValueError(f"scopes: unknown {unknown}; choose from {list(API_SCOPES)}")
    if not scopes:
        raise ValueError("scopes: give at least one of " + ", ".join(API_SCOPES))
    return [s for s in API_SCOPES if s in scopes]


# -- key management (CLI and admin routes) -----------------------------------------------------------
def create_key(session: Session, name: str, scopes: list[str], rate_limit_per_minute: int | None = None) -> tuple[ApiKey, str]:
    """Store a new key; returns the row and the secret, which is shown once and never stored."""
    secret, prefix = new_key()
    row = ApiKey(name=name, prefix=prefix, key_hash=hash_key(secret), scopes=normalize_scopes(scopes),
                 rate_limit_per_minute=rate_limit_per_minute)
    session.add(row)
    session.commit()
    return row, secret


def list_keys(session: Session, include_revoked: bool = True) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.created_at)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.execute(query).scalars())


def find_key(session: Session, id_or_prefix: str) -> ApiKey | None:
    return session.execute(select(ApiKey).where((ApiKey.id == id_or_prefix) | (ApiKey.prefix == id_or_prefix))).scalars().first()


def revoke_key(session: Session, id_or_prefix: str) -> ApiKey | None:
    row = find_key(session, id_or_prefix)
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return row


def key_exists(session: Session) -> bool:
    """Whether any key was ever created; revoked ones count, so revoking the last key never reopens the API."""
    return session.execute(select(ApiKey.id).limit(1)).first() is not None


# -- the request guard --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Principal:
    """Who made the request: a stored key, or a key from CARRYGATE_API_KEYS (`key_id` "settings:N")."""

    key_id: str
    name: str
    scopes: frozenset[str]
    rate_limit_per_minute: int | None = None


def _given_key(request: Request) -> str:
    key = request.headers.get("x-api-key", "")
    if not key:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            key = token.strip()
    return key


def authenticate(request: Request, session: Session) -> Principal | None:
    """The request's principal; None while no key exists at all (open mode). 401 for a missing or bad key."""
    settings_keys: list[str] = request.app.state.settings.api_keys
    state = request.app.state
    if not settings_keys and not getattr(state, "keys_exist", False):
        if not key_exists(session):
            return None
        state.keys_exist = True  # keys are revoked, never deleted: once closed, the API stays closed (no query per request)
    given = _given_key(request)
    if not given:
        raise HTTPException(401, "an API key is required (X-API-Key header or Authorization: Bearer)",
                            headers={"WWW-Authenticate": "Bearer"})
    for i, key in enumerate(settings_keys):
        if hmac.compare_digest(given.encode(), key.encode()):
            return Principal(key_id=f"settings:{i}", name=f"CARRYGATE_API_KEYS[{i}]", scopes=frozenset(API_SCOPES))
    row = session.execute(_KEY_BY_HASH, {"key_hash": hash_key(given)}).one_or_none()
    if row is None:
        raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    at = utcnow()
    if row.last_used_at is None or at - row.last_used_at > timedelta(minutes=1):  # one write a minute, not one per request
        session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=at).execution_options(synchronize_session=False))
        session.commit()
    return Principal(key_id=row.id, name=row.name, scopes=frozenset(row.scopes), rate_limit_per_minute=row.rate_limit_per_minute)


def _principal(request: Request, session: Session) -> Principal | None:
    if not hasattr(request.state, "principal"):
        try:
            request.state.principal = authenticate(request, session)
        finally:
            # Hand the connection back: the guard runs before the route waits for a threadpool slot,
            # and 100 queued requests each holding a connection exhausted the pool (bench/api_load.py).
            session.rollback()
    principal: Principal | None = request.state.principal
    return principal


def _check(principal: Principal | None, needed: str) -> None:
    if principal is not None and not grants(principal.scopes, needed):
        raise HTTPException(403, f"this API key lacks the {needed!r} scope (it has {sorted(principal.scopes)})")


def guard_request(request: Request, session: Session) -> Principal | None:
    """The app-wide check: `read` for GET/HEAD/OPTIONS, `submit` for everything else; rate-limits submissions."""
    if request.url.path in OPEN_PATHS or (request.url.path in DOC_PATHS and request.app.state.settings.public_docs):
        return None
    principal = _principal(request, session)
    _check(principal, "read" if request.method in READ_METHODS else "submit")
    route = request.scope.get("route")
    if principal is not None and getattr(route, "name", None) in SUBMISSION_ROUTES:
        limit = principal.rate_limit_per_minute or request.app.state.settings.submit_rate_limit_per_minute
        retry_after = request.app.state.rate_limiter.hit(principal.key_id, limit)
        if retry_after is not None:
            raise HTTPException(429, f"rate limit: {limit} submissions per minute for key {principal.name!r}",
                                headers={"Retry-After": str(max(1, round(retry_after)))})
    return principal


def scope_checker(scope: str) -> Callable[[Request, Session], Principal | None]:
    """A check for one scope on top of the app-wide one (e.g. `admin` for keys and webhooks)."""
    if scope not in API_SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def check(request: Request, session: Session) -> Principal | None:
        principal = _principal(request, session)
        _check(principal, scope)
        return principal

    return check
