"""The Celery executor: `carrygate worker` with CARRYGATE_EXECUTOR=celery runs Celery workers on a Redis broker.

Celery only dispatches (see `workers/distributed.py`): the message is a job id, the task claims the job
under a lease in the database and runs it as the embedded executor does (`workers/runner.py`: an
evaluation's `run_job`, its shards, or a recommendation's search).

Delivery guarantees:
- `acks_late` + `reject_on_worker_lost`: a message is acknowledged after the task ran, so a worker
  that dies mid-job leaves it to the broker; the visibility timeout (CARRYGATE_CELERY_VISIBILITY_TIMEOUT_SECONDS)
  must exceed the longest job, else Redis would hand a running job to a second worker. The API's
  dispatcher re-sends a job whose lease expired long before that (its claim succeeds once the lease ran out).
- infrastructure errors (the database unreachable) release the lease and retry the task with
  exponential backoff; deterministic failures (a hostile checkpoint, a spec that does not fit) fail the
  job inside `run_job` and are never retried.
- `worker_prefetch_multiplier=1`: a worker holds one message per process, so jobs spread over workers.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task

from carrygate.workers.local import WorkerConfig

log = logging.getLogger(__name__)

RUN_JOB = "carrygate.run_job"
RUN_SHARD = "carrygate.run_shard"
RETRY_BASE_SECONDS = 5
MAX_RETRIES = 8


@dataclass(frozen=True)
class CeleryConfig:
    broker_url: str
    queue: str = "carrygate"
    visibility_timeout_seconds: int = 12 * 3600


_worker_config: WorkerConfig | None = None
_context: Any = None


def create_celery(config: CeleryConfig) -> Celery:
    """A Celery app for sending (the API) or for running (the worker; tasks are registered on it)."""
    app = Celery("carrygate", broker=config.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=config.queue,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": config.visibility_timeout_seconds},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    app.task(name=RUN_JOB, bind=True, max_retries=MAX_RETRIES)(run_job_task)
    app.task(name=RUN_SHARD, bind=True, max_retries=MAX_RETRIES)(run_shard_task)
    return app


def _shard_sender(task: Task) -> Any:
    """`send(shard_id)` for `workers.shards`: shards go to the queue the running task's message came from."""
    queue = (task.request.delivery_info or {}).get("routing_key") or task.app.conf.task_default_queue

    def send(shard_id: str) -> None:
        task.app.send_task(RUN_SHARD, args=[shard_id], queue=queue)

    return send


def sender(app: Celery, queue: str) -> Any:
    """`send(job_id)` for `CeleryDispatcher`."""

    def send(job_id: str) -> None:
        app.send_task(RUN_JOB, args=[job_id], queue=queue)

    return send


def _ctx() -> Any:
    """The worker process's `WorkerContext` (engine, artifact store), built once per process (after the fork)."""
    global _context
    if _context is None:
        from carrygate.store.sessions import make_engine, session_factory
        from carrygate.workers.local import context_of

        config = _worker_config
        if config is None:
            raise RuntimeError("this process was not started by run_worker (no WorkerConfig)")
        if config.torch_threads:
            import torch

            torch.set_num_threads(config.torch_threads)
        factory = session_factory(make_engine(config.database_url))
        _context = context_of(config, factory, f"celery:{socket.gethostname()}:{os.getpid()}")
    return _context


def run_job_task(task: Task, job_id: str) -> str:
    """Claim and run one job. Returns the job's final status, or "skipped" when it was not claimable."""
    from sqlalchemy.exc import DBAPIError

    from carrygate.workers.distributed import claim_job, release_job
    from carrygate.workers.pipeline import fail_crashed
    from carrygate.workers.runner import run_claimed

    try:
        ctx = _ctx()
        with ctx.session_factory() as session:
            if not claim_job(session, job_id, ctx.worker_id, ctx.lease_seconds):
                log.info("job %s is not claimable (done, cancelled or leased elsewhere): skipped", job_id)
                return "skipped"
    except DBAPIError as err:  # the database is away: nothing claimed, try again later
        raise task.retry(exc=err, countdown=RETRY_BASE_SECONDS * 2**task.request.retries) from err
    log.info("worker %s runs job %s", ctx.worker_id, job_id)
    try:
        status = run_claimed(job_id, ctx, _shard_sender(task))
    except DBAPIError as err:  # infrastructure, not the job: give it back and retry with backoff
        log.warning("job %s: database error, retrying: %s", job_id, err)
        try:
            with ctx.session_factory() as session:
                release_job(session, job_id, ctx.worker_id)
        except DBAPIError:
            pass  # the lease will expire and the dispatcher re-sends it
        raise task.retry(exc=err, countdown=RETRY_BASE_SECONDS * 2**task.request.retries) from err
    except Exception as err:  # a bug or resource failure in this job: fail it (not retried), keep the worker
        log.exception("job %s crashed", job_id)
        status = fail_crashed(ctx, job_id, err)
    log.info("job %s: %s", job_id, status)
    return status


def run_shard_task(task: Task, shard_id: str) -> str:
    """Claim and run one shard of a sharded job (`workers/shards.py`); infrastructure errors retry with backoff."""
    from sqlalchemy.exc import DBAPIError

    from carrygate.workers.shards import run_shard

    try:
        status = run_shard(shard_id, _ctx(), _shard_sender(task))
    except DBAPIError as err:
        log.warning("shard %s: database error, retrying: %s", shard_id, err)
        raise task.retry(exc=err, countdown=RETRY_BASE_SECONDS * 2**task.request.retries) from err
    log.info("shard %s: %s", shard_id, status)
    return status


def run_worker(worker_config: WorkerConfig, celery_config: CeleryConfig, *, queues: list[str], concurrency: int,
               pool: str = "prefork", device: str | None = None, hostname: str | None = None) -> None:
    """Start a Celery worker (blocks). `device`: "cpu" hides every GPU, "cuda:N" shows only GPU N, which the
    worker's jobs then run on (as cuda:0 inside it); None keeps CARRYGATE_DEVICE. A device that is missing
    or unusable raises ValueError here, before the worker takes any task."""
    from dataclasses import replace

    from carrygate.models.devices import check_device

    global _worker_config
    if device is not None:
        if device == "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        elif device.startswith("cuda:") and device[5:].isdigit():
            os.environ["CUDA_VISIBLE_DEVICES"] = device[5:]
            device = "cuda:0"
        else:
            raise ValueError(f"device: expected cpu or cuda:N, got {device!r}")
        worker_config = replace(worker_config, device=device)
    check_device(worker_config.device)
    _worker_config = worker_config
    app = create_celery(celery_config)
    argv = ["worker", "--loglevel=INFO", f"--queues={','.join(queues)}", f"--concurrency={concurrency}", f"--pool={pool}",
            f"--hostname={hostname or f'carrygate-{os.getpid()}@{socket.gethostname()}'}", "--without-gossip", "--without-mingle"]
    app.worker_main(argv)
