"""The FastAPI application: `create_app(settings)`; the lifespan migrates the database and starts
the embedded workers (unless told not to)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse

from carrygate.app import dashboard, errors, guard
from carrygate.app.auth import SUBMISSION_ROUTES, RateLimiter
from carrygate.app.db import make_engine, session_factory, upgrade_to_head
from carrygate.app.deps import check_api_key
from carrygate.app.routes import checkpoints, health, jobs, keys, recommendations, reports, webhooks
from carrygate.app.services.webhooks import delivery_config
from carrygate.app.settings import Settings, get_settings
from carrygate.workers.artifacts import ArtifactStore
from carrygate.workers.local import LocalExecutor, WorkerConfig
from carrygate.workers.webhooks import WebhookDispatcher

if TYPE_CHECKING:
    from carrygate.workers.celery_app import CeleryConfig


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(database_url=settings.database_url, artifact_store=settings.artifact_store,
                        cache_dir=str(Path(settings.data_dir) / "cache"), lease_seconds=settings.lease_seconds,
                        heartbeat_seconds=settings.heartbeat_seconds, register_roots=tuple(str(r) for r in settings.register_roots),
                        max_job_seconds=settings.max_job_seconds, max_job_gflop=settings.max_job_gflop)


def _docs(app: FastAPI) -> None:
    """/openapi.json, /docs and /redoc as ordinary routes, so the app-wide key check covers them (FastAPI's
    own docs routes bypass app dependencies); `CARRYGATE_PUBLIC_DOCS` opens them (`app/auth.py`)."""

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=str(request.url_for("openapi_json").path), title=f"{app.title} - API",
                                   oauth2_redirect_url="/docs/oauth2-redirect")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url=str(request.url_for("openapi_json").path), title=f"{app.title} - ReDoc")


def celery_config(settings: Settings) -> CeleryConfig:
    from carrygate.workers.celery_app import CeleryConfig

    return CeleryConfig(broker_url=settings.broker_url, queue=settings.celery_queue,
                        visibility_timeout_seconds=settings.celery_visibility_timeout_seconds)


def _celery_dispatcher(settings: Settings, factory: Any) -> Any:
    """CARRYGATE_EXECUTOR=celery: a thread that sends due jobs to the broker (workers/distributed.py)."""
    from carrygate.workers.celery_app import create_celery, sender
    from carrygate.workers.distributed import CeleryDispatcher

    app = create_celery(celery_config(settings))
    return CeleryDispatcher(factory, sender(app, settings.celery_queue), settings.dispatch_poll_seconds,
                            settings.redispatch_after_seconds)


def create_app(settings: Settings | None = None, *, start_workers: bool = True, start_dispatchers: bool | None = None) -> FastAPI:
    """`start_workers`: the embedded worker processes (executor local). `start_dispatchers` (default: as
    `start_workers`): the threads that send jobs to Celery (executor celery) and deliver webhooks."""
    settings = settings or get_settings()
    dispatch = start_workers if start_dispatchers is None else start_dispatchers

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upgrade_to_head(settings.database_url)
        engine = make_engine(settings.database_url)
        app.state.settings = settings
        app.state.engine = engine
        app.state.session_factory = session_factory(engine)
        app.state.store = ArtifactStore(settings.artifact_store)
        app.state.executor = None
        if start_workers and settings.executor == "local":
            app.state.executor = LocalExecutor(worker_config(settings), settings.worker_concurrency)
            app.state.executor.start()
        app.state.celery_dispatcher = None
        if dispatch and settings.executor == "celery":
            app.state.celery_dispatcher = _celery_dispatcher(settings, app.state.session_factory)
            app.state.celery_dispatcher.start()
        app.state.webhook_dispatcher = None
        if dispatch:  # webhook deliveries are I/O: a thread beside the API, for either executor
            app.state.webhook_dispatcher = WebhookDispatcher(app.state.session_factory, delivery_config(settings))
            app.state.webhook_dispatcher.start()
        try:
            yield
        finally:
            if app.state.webhook_dispatcher is not None:
                app.state.webhook_dispatcher.stop()
            if app.state.celery_dispatcher is not None:
                app.state.celery_dispatcher.stop()
            if app.state.executor is not None:
                app.state.executor.stop()
            engine.dispose()

    app = FastAPI(title="carrygate", version="0.1.0", lifespan=lifespan, dependencies=[Depends(check_api_key)],
                  description="Gate compressed recursive reasoners (TRM/HRM) on carry-trajectory fidelity before they ship.",
                  openapi_url=None, docs_url=None, redoc_url=None)
    errors.install(app)
    guard.install(app, SUBMISSION_ROUTES)
    _docs(app)
    app.include_router(health.router)
    app.include_router(checkpoints.router)
    app.include_router(jobs.router)
    app.include_router(recommendations.router)
    app.include_router(reports.router)
    app.include_router(keys.router)
    app.include_router(webhooks.router)
    dashboard.install(app)
    app.state.rate_limiter = RateLimiter()
    return app
