"""The FastAPI application: `create_app(settings)`; the lifespan migrates the database and starts
the embedded workers and dispatchers (`Background`, unless told not to). `api_process_app` is the app of
each process of `carrygate serve --api-workers N`, whose workers and dispatchers run once, in the
supervisor process (`app/supervisor.py`)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse

from carrygate.app import dashboard, errors, guard
from carrygate.app.auth import SUBMISSION_ROUTES
from carrygate.app.db import make_engine, session_factory, upgrade_to_head
from carrygate.app.deps import check_api_key
from carrygate.app.ratelimit import make_rate_limiter
from carrygate.app.routes import checkpoints, health, jobs, keys, recommendations, reports, webhooks
from carrygate.app.services.jobs import SubmissionCache
from carrygate.app.services.webhooks import delivery_config
from carrygate.app.settings import Settings, get_settings
from carrygate.app.supervisor import status_path
from carrygate.workers.artifacts import ArtifactStore
from carrygate.workers.local import LocalExecutor, WorkerConfig
from carrygate.workers.webhooks import WebhookDispatcher

if TYPE_CHECKING:
    from carrygate.workers.celery_app import CeleryConfig


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(database_url=settings.database_url, artifact_store=settings.artifact_store,
                        cache_dir=str(Path(settings.data_dir) / "cache"), lease_seconds=settings.lease_seconds,
                        heartbeat_seconds=settings.heartbeat_seconds, register_roots=tuple(str(r) for r in settings.register_roots),
                        max_job_seconds=settings.max_job_seconds, max_job_gflop=settings.max_job_gflop, device=settings.device,
                        reference_cache_dir=str(settings.reference_cache_dir) if settings.reference_cache_dir else None,
                        reference_cache_entry_bytes=settings.reference_cache_entry_bytes,
                        reference_cache_total_bytes=settings.reference_cache_total_bytes)


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


@dataclass
class Background:
    """What runs once per deployment beside the API: the embedded worker processes and the Celery and
    webhook dispatcher threads (each None when not started). With one API process they run in it; under
    `carrygate serve --api-workers N` in the supervisor process, never in the N API processes."""

    executor: LocalExecutor | None = None
    celery_dispatcher: Any = None
    webhook_dispatcher: WebhookDispatcher | None = None

    @classmethod
    def start(cls, settings: Settings, factory: Any, *, workers: bool, dispatchers: bool) -> Background:
        """`workers`: the embedded worker processes (executor local). `dispatchers`: the threads that send jobs
        to Celery (executor celery) and deliver webhooks (either executor)."""
        background = cls()
        if workers and settings.executor == "local":
            background.executor = LocalExecutor(worker_config(settings), settings.worker_concurrency)
            background.executor.start()
        if dispatchers and settings.executor == "celery":
            background.celery_dispatcher = _celery_dispatcher(settings, factory)
            background.celery_dispatcher.start()
        if dispatchers:  # webhook deliveries are I/O: a thread beside the API, for either executor
            background.webhook_dispatcher = WebhookDispatcher(factory, delivery_config(settings))
            background.webhook_dispatcher.start()
        return background

    def stop(self) -> None:
        if self.webhook_dispatcher is not None:
            self.webhook_dispatcher.stop()
        if self.celery_dispatcher is not None:
            self.celery_dispatcher.stop()
        if self.executor is not None:
            self.executor.stop()


def create_app(settings: Settings | None = None, *, start_workers: bool = True, start_dispatchers: bool | None = None,
               migrate: bool = True, supervisor_pid: int | None = None) -> FastAPI:
    """`start_workers`: the embedded worker processes (executor local). `start_dispatchers` (default: as
    `start_workers`): the threads that send jobs to Celery (executor celery) and deliver webhooks.
    `migrate`: bring the database to head on start. `supervisor_pid`: this is one of several API processes,
    and the process with this pid runs the workers and dispatchers (`app/supervisor.py`)."""
    settings = settings or get_settings()
    dispatch = start_workers if start_dispatchers is None else start_dispatchers

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate:
            upgrade_to_head(settings.database_url)
        engine = make_engine(settings.database_url)
        app.state.settings = settings
        app.state.engine = engine
        app.state.session_factory = session_factory(engine)
        app.state.store = ArtifactStore(settings.artifact_store)
        app.state.rate_limiter = make_rate_limiter(settings.rate_limit_storage, engine)
        app.state.submissions = SubmissionCache()
        app.state.supervisor_status = status_path(settings.data_dir, supervisor_pid) if supervisor_pid is not None else None
        background = Background.start(settings, app.state.session_factory, workers=start_workers, dispatchers=dispatch)
        app.state.executor = background.executor
        app.state.celery_dispatcher = background.celery_dispatcher
        app.state.webhook_dispatcher = background.webhook_dispatcher
        try:
            yield
        finally:
            background.stop()
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
    return app


def api_process_app() -> FastAPI:
    """The app of each process of `carrygate serve --api-workers N` (uvicorn imports it by name in every
    worker process): no job workers, no dispatchers and no migrations, which the supervisor process (this
    process's parent) runs once for all of them (`app/supervisor.py`). Settings come from the environment."""
    return create_app(get_settings(), start_workers=False, start_dispatchers=False, migrate=False, supervisor_pid=os.getppid())
