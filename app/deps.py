"""FastAPI dependencies: settings, DB sessions, the artifact store (long-lived objects on app.state)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from carrygate.app.auth import Principal, guard_request, scope_checker
from carrygate.app.db import get_session
from carrygate.app.settings import Settings
from carrygate.workers.artifacts import ArtifactStore


# Async on purpose: FastAPI sends a plain `def` dependency to the threadpool, a hand-off per request for an attribute read.
async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> ArtifactStore:
    return request.app.state.store


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]


def check_api_key(request: Request, session: SessionDep) -> Principal | None:
    """The app-wide guard (installed on every route by `create_app`): once any API key exists, GET routes
    need a key with `read` and every other route one with `submit`; job submissions are rate-limited per key.
    Keys and scopes: `app/auth.py`."""
    return guard_request(request, session)


def require_scope(scope: str) -> Any:
    """A dependency demanding `scope` (read | submit | admin), e.g. `dependencies=[require_scope("admin")]`,
    or as a parameter `principal: Annotated[Principal | None, require_scope("read")]` (None in open mode)."""
    checker = scope_checker(scope)

    def dependency(request: Request, session: SessionDep) -> Principal | None:
        return checker(request, session)

    return Depends(dependency)
