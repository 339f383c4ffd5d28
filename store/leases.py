"""Leases on job-store rows: claim, renew, release and settle, the same for a job and for a shard.

A worker runs a row (a `jobs` or a `job_shards` row) only while it holds the row's lease: `lease_owner`
names it and `lease_expires_at` says until when. Every transition is one conditional UPDATE, so two
workers racing for a row never both win (rowcount 1 for exactly one of them):
- `claim`   queued, or running with an expired lease (its worker died) -> running, owned, `attempts` + 1;
- `renew`   extend the lease (and write progress) while still the owner;
- `release` give the row back to the queue (an infrastructure error: it will be retried, `attempts` - 1);
- `settle`  set the end state while still the owner.
None of them commits: the caller owns the transaction, so a settle can share its commit with the
result and the webhook outbox (`workers/pipeline.py`). `LeaseTable(Job)` and `LeaseTable(JobShard)`
are the two users (`JOBS`, `SHARDS`); the job queue (`workers/queue.py`) and the shards
(`workers/shards.py`) add what only they need on top.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, and_, or_, update
from sqlalchemy.orm import Session

from carrygate.store.tables import Job, JobShard

__all__ = ["JOBS", "MAX_ATTEMPTS", "SHARDS", "LeaseTable", "now"]

MAX_ATTEMPTS = 3
"""Runs of one row at most: a job (or shard) that kills its worker must not kill them all."""

Row = TypeVar("Row", Job, JobShard)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LeaseTable(Generic[Row]):
    """The lease operations on one table with `status`, `lease_owner`, `lease_expires_at`, `heartbeat_at`, `attempts`."""

    table: type[Row]

    def claimable(self, at: datetime) -> ColumnElement[bool]:
        """Queued, or running under a lease that expired before `at` (its worker died)."""
        t = self.table
        return or_(t.status == "queued", and_(t.status == "running", t.lease_expires_at < at))

    @staticmethod
    def expired(row: Row, at: datetime) -> bool:
        """`claimable`'s running-with-expired-lease half, for a row already loaded."""
        return row.status == "running" and row.lease_expires_at is not None and row.lease_expires_at < at

    def _owned(self, row_id: str, owner: str) -> tuple[ColumnElement[bool], ...]:
        t = self.table
        return t.id == row_id, t.lease_owner == owner, t.status == "running"

    def _update(self, session: Session, where: Iterable[ColumnElement[bool]], values: Mapping[str, Any]) -> bool:
        done = session.execute(update(self.table).where(*where).values(**values).execution_options(synchronize_session=False))
        return done.rowcount == 1

    def claim(self, session: Session, row_id: str, worker_id: str, lease_seconds: float, *,
              where: Iterable[ColumnElement[bool]] = (), values: Mapping[str, Any] | None = None, at: datetime | None = None) -> bool:
        """Take the row for `worker_id` if it is claimable (and matches `where`); `values` are written with the claim."""
        at = at or now()
        lease = {"status": "running", "lease_owner": worker_id, "lease_expires_at": at + timedelta(seconds=lease_seconds),
                 "heartbeat_at": at, "attempts": self.table.attempts + 1, "error": None}
        return self._update(session, (self.table.id == row_id, self.claimable(at), *where), lease | dict(values or {}))

    def renew(self, session: Session, row_id: str, owner: str, lease_seconds: float, values: Mapping[str, Any] | None = None) -> bool:
        """Extend the lease from now (and write `values`, e.g. progress) if `owner` still holds it."""
        at = now()
        lease = {"lease_expires_at": at + timedelta(seconds=lease_seconds), "heartbeat_at": at}
        return self._update(session, self._owned(row_id, owner), lease | dict(values or {}))

    def release(self, session: Session, row_id: str, owner: str) -> bool:
        """Give the row back to the queue, uncounted: the run did not fail, the infrastructure did."""
        values = {"status": "queued", "lease_owner": None, "lease_expires_at": None, "attempts": self.table.attempts - 1}
        return self._update(session, self._owned(row_id, owner), values)

    def settle(self, session: Session, row_id: str, owner: str, status: str, **values: Any) -> bool:
        """Set the row's end state (and `values`) if `owner` still holds it. Returns whether it did."""
        return self._update(session, self._owned(row_id, owner), {"status": status, **values})


JOBS: LeaseTable[Job] = LeaseTable(Job)
SHARDS: LeaseTable[JobShard] = LeaseTable(JobShard)
