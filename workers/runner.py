"""Run a claimed jobs row, whatever its kind: the one entry both executors (embedded and Celery) call.

- kind "recommend": the budgeted search (`workers/recommend.py`);
- an evaluation with `options.shards` > 1: handed to its shards (`workers/shards.py`);
- any other evaluation: `workers/pipeline.py` `run_job`.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from carrygate.store.tables import Job
from carrygate.workers.context import WorkerContext
from carrygate.workers.pipeline import run_job
from carrygate.workers.queue import JobOutcome
from carrygate.workers.recommend import run_recommendation
from carrygate.workers.shards import fan_out, is_sharded

__all__ = ["run_claimed"]


def run_claimed(job_id: str, ctx: WorkerContext, send: Callable[[str], None]) -> JobOutcome:
    """Run the job this worker claimed; `send(shard_id)` hands a sharded evaluation's shards to the broker."""
    with ctx.session_factory() as session:
        kind = session.execute(select(Job.kind).where(Job.id == job_id)).scalar_one_or_none()
        sharded = kind == "evaluate" and is_sharded(session, job_id)
    if kind is None:
        return "skipped"
    if kind == "recommend":
        return run_recommendation(job_id, ctx)
    return fan_out(job_id, ctx, send) if sharded else run_job(job_id, ctx)
