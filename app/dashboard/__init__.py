"""The read-only web dashboard: `install(app)` adds its pages under /dashboard, its static files and the
browser sign-in for servers with API keys (`access.py`)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

__all__ = ["install"]


def install(app: FastAPI) -> None:
    from carrygate.app.dashboard.access import DashboardSession
    from carrygate.app.dashboard.recommend import router as recommend_router
    from carrygate.app.dashboard.routes import router

    app.include_router(router)
    app.include_router(recommend_router)
    app.add_middleware(DashboardSession)  # browsers sign in with a key kept in a cookie (reads only)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
