"""The jobs table as a durable queue: atomic claim, lease heartbeat, crash recovery.

The lease operations themselves (one conditional UPDATE each) are `store.leases.JOBS`; this module adds
what only jobs need. A worker claims the oldest job that is queued, or running with an expired lease
(its worker died):
- PostgreSQL: `SELECT ... FOR UPDATE SKIP LOCKED`, so concurrent workers never block on or double-claim a row;
- SQLite: the conditional `UPDATE ... WHERE id = ? AND <still claimable>`; SQLite serialises writers,
  so exactly one of two racing workers sees rowcount 1.
The heartbeat renews the lease and reports whether cancellation was requested; a worker that lost
its lease (someone re-claimed the job) stops writing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from carrygate.store.leases import JOBS, MAX_ATTEMPTS, now
from carrygate.store.tables import Job
from carrygate.store.vocabulary import FinishedStatus

__all__ = ["MAX_ATTEMPTS", "Beat", "JobOutcome", "claim", "claim_next_job", "finish", "heartbeat", "now", "requeue_expired",
           "settle_abandoned"]

JobOutcome = Literal["succeeded", "failed", "cancelled", "lost", "duplicate", "sharded", "skipped"]
"""What running a job returns: its end status, or `lost` (another worker holds its lease now), `duplicate`
(an earlier run already stored its result), `sharded` (handed to its shards), `skipped` (not claimable)."""


def settle_abandoned(session: Session, at: datetime) -> None:
    """Jobs nobody will finish: cancelled while queued-for-re-run or while their worker was dead,
    and jobs whose workers died MAX_ATTEMPTS times (a job that kills its worker must not kill them all)."""
    session.execute(update(Job).where(JOBS.claimable(at), Job.cancel_requested.is_(True))
                    .values(status="cancelled", error="cancelled by request", finished_at=at, lease_owner=None)
                    .execution_options(synchronize_session=False))
    poisoned = (Job.status == "running", Job.lease_expires_at < at, Job.attempts >= MAX_ATTEMPTS)
    error = f"its worker died {MAX_ATTEMPTS} times while running it"
    for job_id, kind, checkpoint_id, tags in session.execute(select(Job.id, Job.kind, Job.checkpoint_id, Job.tags).where(*poisoned)).all():
        failed = session.execute(update(Job).where(Job.id == job_id, *poisoned)
                                 .values(status="failed", error=error, finished_at=at, lease_owner=None)
                                 .execution_options(synchronize_session=False))
        if failed.rowcount == 1:  # its job.failed (recommendation.failed) webhooks go out with the same commit (outbox)
            from carrygate.workers.webhooks import enqueue_job_events

            enqueue_job_events(session, job_id=job_id, checkpoint_id=checkpoint_id, tags=tags or [], status="failed", error=error,
                               kind=kind)


def claim(session: Session, job_id: str, worker_id: str, lease_seconds: float, at: datetime) -> bool:
    """The claim itself (no commit): the job runs from now under `worker_id`'s lease."""
    return JOBS.claim(session, job_id, worker_id, lease_seconds, values={"started_at": at}, at=at)


def claim_next_job(session: Session, worker_id: str, lease_seconds: float) -> str | None:
    """Claim one job for `worker_id`; returns its id, or None when nothing is claimable."""
    at = now()
    settle_abandoned(session, at)
    query = select(Job.id).where(JOBS.claimable(at)).order_by(Job.created_at).limit(1)
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    job_id = session.execute(query).scalar_one_or_none()
    if job_id is None:
        session.commit()  # nothing to claim, but keep what settle_abandoned settled (a rollback lost it)
        return None
    claimed = claim(session, job_id, worker_id, lease_seconds, at)
    session.commit()
    return job_id if claimed else None


@dataclass(frozen=True)
class Beat:
    still_owner: bool
    cancel_requested: bool


def heartbeat(session: Session, job_id: str, worker_id: str, lease_seconds: float, progress: tuple[int, int] | None = None, *,
              fraction: float | None = None, stage: str | None = None) -> Beat:
    """Renew the lease (and record progress: puzzles done of total, or a `fraction` and a `stage` text) if
    `worker_id` still owns the job."""
    values: dict[str, object] = {}
    if progress is not None:
        done, total = progress
        values = {"puzzles_done": done, "puzzles_total": total, "progress": min(1.0, done / total) if total else 0.0}
    if fraction is not None:
        values["progress"] = min(1.0, max(0.0, fraction))
    if stage is not None:
        values["stage"] = stage[:200]
    renewed = JOBS.renew(session, job_id, worker_id, lease_seconds, values)
    cancel = session.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one_or_none()
    session.commit()
    return Beat(still_owner=renewed, cancel_requested=bool(cancel))


def requeue_expired(session: Session) -> int:
    """Put running jobs whose lease expired back in the queue (start-up recovery)."""
    result = session.execute(
        update(Job).where(Job.status == "running", Job.lease_expires_at < now())
        .values(status="queued", lease_owner=None, lease_expires_at=None).execution_options(synchronize_session=False)
    )
    session.commit()
    return int(result.rowcount or 0)


def finish(session: Session, job_id: str, worker_id: str, status: FinishedStatus, error: str | None = None) -> bool:
    """Mark the job finished if this worker still owns it (no commit: the result and its events share it)."""
    return JOBS.settle(session, job_id, worker_id, status, error=error, finished_at=now(), lease_expires_at=None,
                       progress=1.0 if status == "succeeded" else Job.progress)
