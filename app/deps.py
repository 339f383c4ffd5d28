"""FastAPI dependencies: settings, DB sessions, the artifact store (long-lived objects on app.state)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from app.db import get_session
from app.settings import Settings
from workers.artifacts import ArtifactStore


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> ArtifactStore:
    return request.app.state.store


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]


def check_api_key(request: Request) -> None:
    """With `CARRYGATE_API_KEYS` set, every mutating request needs one of them in `X-API-Key`.
    (Scoped, hashed keys managed by `carrygate keys` are issue 5's; this is the minimal guard.)"""
    keys: list[str] = request.app.state.settings.api_keys
    if not keys or request.method in ("GET", "HEAD", "OPTIONS"):
        return
    given = request.headers.get("x-api-key", "")
    if not any(hmac.compare_digest(given.encode(), key.encode()) for key in keys):
        raise HTTPException(status_code=401, detail="a valid X-API-Key header is required")
