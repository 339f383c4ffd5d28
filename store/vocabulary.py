"""Every closed vocabulary of the job store, defined once as a `Literal`.

The tables' CHECK constraints, the API schemas (`app/schemas.py`) and the routes' query parameters
all derive from these, so a new status or event is added here and nowhere else (a CHECK constraint
that changes still needs its migration). The tuples keep the `Literal`'s order, which the metrics
and listings show. The gate's `Decision` is shared with `gate/` and so lives below both, in
`models/vocabulary.py`.
"""

from __future__ import annotations

from typing import Literal, get_args

JobKind = Literal["evaluate", "recommend"]
"""What a job row runs: an evaluation of given candidates (`POST /jobs`) or a budgeted search (`POST /recommendations`)."""
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FinishedStatus = Literal["succeeded", "failed", "cancelled"]
ShardStatus = Literal["queued", "running", "done", "failed", "cancelled"]
CheckpointSource = Literal["upload", "registered"]
ApiScope = Literal["read", "submit", "admin"]
WebhookEvent = Literal["verdict.no_go", "fidelity.below_threshold", "job.failed", "job.succeeded", "recommendation.ready",
                       "recommendation.failed"]
DeliveryStatus = Literal["pending", "delivered", "failed"]

JOB_KINDS: tuple[JobKind, ...] = get_args(JobKind)
JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
FINISHED_STATUSES: tuple[FinishedStatus, ...] = get_args(FinishedStatus)
SHARD_STATUSES: tuple[ShardStatus, ...] = get_args(ShardStatus)
CHECKPOINT_SOURCES: tuple[CheckpointSource, ...] = get_args(CheckpointSource)
API_SCOPES: tuple[ApiScope, ...] = get_args(ApiScope)
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = get_args(WebhookEvent)
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = get_args(DeliveryStatus)
