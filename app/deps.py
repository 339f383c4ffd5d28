"""FastAPI dependencies: settings, DB sessions, the artifact store (long-lived objects on app.state)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
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
