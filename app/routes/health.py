"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from carrygate.app.db import current_revision_is_head
from carrygate.app.deps import SessionDep
from carrygate.app.services import jobs
from carrygate.app.supervisor import read_status
from carrygate.store.tables import JOB_STATUSES

router = APIRouter(tags=["health"])
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "database unreachable, migrations not at head, or no embedded worker alive"}})
def readyz(request: Request, response: Response, session: SessionDep) -> dict[str, object]:
    """The database answers and its schema is at the newest migration."""
    try:
        session.execute(text("SELECT 1"))
        migrated = current_revision_is_head(request.app.state.engine)
    except Exception as err:  # any DB error means not ready
        response.status_code = 503
        return {"status": "unavailable", "reason": str(err).splitlines()[0]}
    if not migrated:
        response.status_code = 503
        return {"status": "unavailable", "reason": "migrations are not at head"}
    executor = getattr(request.app.state, "executor", None)
    supervised = getattr(request.app.state, "supervisor_status", None)
    if executor is None and supervised is not None:  # one of several API processes: the supervisor runs the workers
        return _supervisor_ready(supervised, response)
    workers = executor.alive() if executor is not None else 0
    if executor is not None and workers == 0:
        # Jobs would queue forever; the supervisor is restarting workers, so this should pass again soon.
        response.status_code = 503
        return {"status": "unavailable", "reason": "no embedded worker is alive", "workers": 0}
    return {"status": "ok", "workers": workers}


def _supervisor_ready(path: Path, response: Response) -> dict[str, object]:
    status = read_status(path)
    if status is None:
        response.status_code = 503
        return {"status": "unavailable", "reason": "the supervisor process's status is missing or stale (is it alive?)"}
    if status["embedded"] and status["workers"] == 0:
        response.status_code = 503
        return {"status": "unavailable", "reason": "no embedded worker is alive", "workers": 0}
    return {"status": "ok", "workers": status["workers"]}


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(session: SessionDep) -> Response:
    """Prometheus text format: jobs by status, queue depth, job duration histogram."""
    counts = jobs.status_counts(session=session)
    lines = ["# HELP carrygate_jobs Jobs by status.", "# TYPE carrygate_jobs gauge"]
    lines += [f'carrygate_jobs{{status="{s}"}} {counts.get(s, 0)}' for s in JOB_STATUSES]
    lines += ["# HELP carrygate_queue_depth Jobs waiting for a worker.", "# TYPE carrygate_queue_depth gauge",
              f"carrygate_queue_depth {counts.get('queued', 0)}"]
    durations = jobs.finished_durations(session=session)
    lines += ["# HELP carrygate_job_duration_seconds Wall time of finished jobs.", "# TYPE carrygate_job_duration_seconds histogram"]
    for bound in DURATION_BUCKETS:
        lines.append(f'carrygate_job_duration_seconds_bucket{{le="{bound}"}} {sum(d <= bound for d in durations)}')
    lines += [f'carrygate_job_duration_seconds_bucket{{le="+Inf"}} {len(durations)}',
              f"carrygate_job_duration_seconds_sum {sum(durations):.3f}", f"carrygate_job_duration_seconds_count {len(durations)}"]
    return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
