"""The read-only web dashboard: `install(app)` adds its pages under /dashboard and its static files."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

__all__ = ["install"]


def install(app: FastAPI) -> None:
    from app.dashboard.routes import router

    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
