"""What a worker carries while it runs a job: its context, its limits, the heartbeat and the deadline.

Shared by the job pipeline (`workers/pipeline.py`) and the shards (`workers/shards.py`); both settle
through `workers.queue` / `store.leases`, so neither reaches into the other's private names.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from carrygate.models.reference_cache import ReferenceCache
from carrygate.workers.artifacts import ArtifactStore
from carrygate.workers.queue import heartbeat

__all__ = ["Deadline", "Heartbeat", "JobFailed", "JobLimits", "WorkerContext"]

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """A deterministic failure: the job is marked failed with this message and not retried."""


@dataclass(frozen=True)
class JobLimits:
    """What a worker enforces whatever the API let through (rows written before a limit existed, another API)."""

    register_roots: tuple[Path, ...] = ()  # every path a job names must resolve under one of these (empty: any)
    max_seconds: float | None = None  # CARRYGATE_MAX_JOB_SECONDS
    max_gflop: float | None = None  # CARRYGATE_MAX_JOB_GFLOP


@dataclass(frozen=True)
class WorkerContext:
    session_factory: sessionmaker[Session]
    store: ArtifactStore
    worker_id: str
    lease_seconds: float
    heartbeat_seconds: float
    cache_dir: Path
    limits: JobLimits = field(default_factory=JobLimits)
    device: str = "cpu"  # resolved when the worker started (models.devices.resolve_device)
    reference_cache: ReferenceCache | None = None  # the reference's trajectory across jobs (models.reference_cache)


class Heartbeat(threading.Thread):
    """Renews the job's lease, writes progress, and watches for cancellation, off the model thread.

    Subclasses (the shards' heartbeat) override `beat`; `cancelled` and `lost` are what the run polls."""

    def __init__(self, ctx: WorkerContext, job_id: str) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id[:8]}")
        self.ctx, self.job_id = ctx, job_id
        self.progress: tuple[int, int] | None = None
        self.fraction: float | None = None  # progress as a fraction, with `stage` (a recommendation's search)
        self.stage: str | None = None
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._stop_event = threading.Event()

    def beat(self) -> None:
        with self.ctx.session_factory() as session:
            beat = heartbeat(session, self.job_id, self.ctx.worker_id, self.ctx.lease_seconds, self.progress, fraction=self.fraction,
                             stage=self.stage)
        if beat.cancel_requested:
            self.cancelled.set()
        if not beat.still_owner:
            self.lost.set()

    def run(self) -> None:
        while not self._stop_event.wait(self.ctx.heartbeat_seconds):
            try:
                self.beat()
            except Exception:  # a transient DB error must not kill the job; the lease is long
                log.exception("heartbeat failed for job %s", self.job_id)

    def stop(self) -> None:
        self._stop_event.set()


class Deadline:
    """CARRYGATE_MAX_JOB_SECONDS for one run, from the moment the worker took the job."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._end = None if seconds is None else time.monotonic() + seconds

    def passed(self) -> bool:
        return self._end is not None and time.monotonic() >= self._end

    def reason(self) -> str:
        return f"timed out: the job ran longer than CARRYGATE_MAX_JOB_SECONDS ({self.seconds:g} s) and was stopped"
