"""The Celery executor's database side: claiming one named job, and sending due jobs to the broker.

Job state stays in the jobs table; Celery only carries "run job X" messages. So every rule of the
embedded executor holds unchanged: a job runs only under a lease (`claim_job` is `claim_next_job`'s claim,
`store.leases.JOBS.claim`, for one id), the unique constraints keep one result and one verdict set,
cancellation goes through the heartbeat, and a duplicate or stale message is harmless (its claim fails).

`dispatch_due` (run by `CeleryDispatcher`, a thread in the API process) sends
- queued jobs never sent, or sent longer than `redispatch_after` ago (a message lost with the broker), and
- running jobs whose lease expired (their worker died) once per expiry, so another worker re-runs them
  long before Redis would redeliver the unacknowledged message (the visibility timeout is hours).
`dispatched_at` is set by a conditional UPDATE before sending, so two API processes do not both send.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from carrygate.store.leases import JOBS
from carrygate.store.tables import Job
from carrygate.workers.queue import claim, now, settle_abandoned

log = logging.getLogger(__name__)


def claim_job(session: Session, job_id: str, worker_id: str, lease_seconds: float) -> bool:
    """Claim the job `job_id` for `worker_id` if it is claimable (queued, or running with an expired lease)."""
    at = now()
    settle_abandoned(session, at)
    claimed = claim(session, job_id, worker_id, lease_seconds, at)
    session.commit()
    return claimed


def release_job(session: Session, job_id: str, worker_id: str) -> bool:
    """Give a claimed job back to the queue (an infrastructure error: the task will be retried)."""
    released = JOBS.release(session, job_id, worker_id)
    session.commit()
    return released


def _due(redispatch_after: float):  # noqa: ANN202  (a SQL expression)
    at = now()
    never_or_stale = or_(Job.dispatched_at.is_(None), Job.dispatched_at < at - timedelta(seconds=redispatch_after))
    orphaned = and_(Job.status == "running", Job.lease_expires_at < at,
                    or_(Job.dispatched_at.is_(None), Job.dispatched_at < Job.lease_expires_at))
    return or_(and_(Job.status == "queued", never_or_stale), orphaned)


def dispatch_due(factory: sessionmaker[Session], send: Callable[[str], None], redispatch_after: float, limit: int = 100) -> list[str]:
    """Send every due job to the broker once; returns the ids sent."""
    sent: list[str] = []
    with factory() as session:
        ids = session.execute(select(Job.id).where(_due(redispatch_after)).order_by(Job.created_at).limit(limit)).scalars().all()
        for job_id in ids:
            marked = session.execute(update(Job).where(Job.id == job_id, _due(redispatch_after)).values(dispatched_at=now())
                                     .execution_options(synchronize_session=False))
            session.commit()
            if marked.rowcount != 1:
                continue  # another dispatcher took it
            try:
                send(job_id)
            except Exception:  # broker unreachable: unmark, the next round tries again
                log.exception("could not send job %s to the broker", job_id)
                session.execute(update(Job).where(Job.id == job_id).values(dispatched_at=None).execution_options(synchronize_session=False))
                session.commit()
                break
            sent.append(job_id)
    return sent


class CeleryDispatcher(threading.Thread):
    """Sends due jobs to the broker every `poll_seconds` (a thread in the API process)."""

    def __init__(self, factory: sessionmaker[Session], send: Callable[[str], None], poll_seconds: float, redispatch_after: float) -> None:
        super().__init__(daemon=True, name="celery-dispatcher")
        self.factory, self.send, self.poll_seconds, self.redispatch_after = factory, send, poll_seconds, redispatch_after
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                sent = dispatch_due(self.factory, self.send, self.redispatch_after)
                if sent:
                    log.info("sent %d job(s) to the broker", len(sent))
            except Exception:  # the database may be briefly away
                log.exception("dispatch pass failed")
            self._stop_event.wait(self.poll_seconds)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        self.join(timeout)
