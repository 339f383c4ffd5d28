"""The embedded executor: worker processes that take jobs from the jobs table.

`carrygate serve` starts the API and, beside it, `worker_concurrency` worker processes (spawned,
so no torch state is shared with the API process, which therefore never blocks on model work).
Each worker polls the table, claims a job atomically (`workers/queue.py`), runs it with a lease
heartbeat, and goes back to polling. Every kind of job runs through `workers/runner.py` (evaluations,
recommendations). On start-up expired leases are re-queued, so jobs interrupted
by a killed server or worker run again; the unique constraints keep one result and verdict per job.
A job with `options.shards` > 1 is split into puzzle shards (`workers/shards.py`) that the workers
claim before new jobs, so the shards of one job run side by side.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from carrygate.store.sessions import make_engine, session_factory
from carrygate.workers.artifacts import ArtifactStore
from carrygate.workers.context import JobLimits, WorkerContext
from carrygate.workers.pipeline import fail_crashed
from carrygate.workers.queue import claim_next_job, requeue_expired
from carrygate.workers.runner import run_claimed
from carrygate.workers.shards import next_shard, run_shard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker process needs; plain values so it pickles across `spawn`."""

    database_url: str
    artifact_store: str
    cache_dir: str
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 5.0
    poll_seconds: float = 0.5
    torch_threads: int | None = None
    register_roots: tuple[str, ...] = ()  # the worker re-checks every path a job names (CARRYGATE_REGISTER_ROOTS)
    max_job_seconds: float | None = None  # CARRYGATE_MAX_JOB_SECONDS
    max_job_gflop: float | None = None  # CARRYGATE_MAX_JOB_GFLOP, re-checked once the real config and probe are known
    device: str = "cpu"  # CARRYGATE_DEVICE, resolved (and refused if unusable) when the worker starts
    reference_cache_dir: str | None = None  # CARRYGATE_REFERENCE_CACHE_DIR; None: no cache
    reference_cache_entry_bytes: int = 0
    reference_cache_total_bytes: int = 0


def limits_of(config: WorkerConfig) -> JobLimits:
    return JobLimits(register_roots=tuple(Path(r) for r in config.register_roots), max_seconds=config.max_job_seconds,
                     max_gflop=config.max_job_gflop)


def context_of(config: WorkerConfig, factory: sessionmaker[Session], worker_id: str) -> WorkerContext:
    """A worker's context; raises ValueError when its device is missing or unusable (before any job is claimed)."""
    from carrygate.models.devices import resolve_device
    from carrygate.models.reference_cache import ReferenceCache

    device = resolve_device(config.device)
    cache = None
    if config.reference_cache_dir and config.reference_cache_entry_bytes > 0:
        cache = ReferenceCache(config.reference_cache_dir, max_entry_bytes=config.reference_cache_entry_bytes,
                               max_total_bytes=config.reference_cache_total_bytes)
    Path(config.cache_dir).mkdir(parents=True, exist_ok=True)
    return WorkerContext(factory, ArtifactStore(config.artifact_store), worker_id, config.lease_seconds, config.heartbeat_seconds,
                         Path(config.cache_dir), limits_of(config), device=str(device), reference_cache=cache)


def _no_broker(shard_id: str) -> None:
    """Embedded workers find shards by polling (`next_shard`): nothing to send."""


def worker_loop(config: WorkerConfig, worker_id: str, max_jobs: int | None = None, idle_exit: float | None = None) -> int:
    """Claim and run jobs until stopped (SIGTERM), `max_jobs` ran, or idle for `idle_exit` seconds."""
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)
    engine = make_engine(config.database_url)
    factory = session_factory(engine)
    ctx = context_of(config, factory, worker_id)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    ran, idle_since = 0, time.monotonic()
    while not stopping and (max_jobs is None or ran < max_jobs):
        with factory() as session:  # shards of running jobs first: they finish work already started
            shard_id = next_shard(session)
            job_id = claim_next_job(session, worker_id, config.lease_seconds) if shard_id is None else None
        if shard_id is not None:
            try:
                log.info("worker %s: shard %s: %s", worker_id, shard_id, run_shard(shard_id, ctx, _no_broker))
            except Exception:  # the database went away: the shard was given back or its lease runs out
                log.exception("shard %s", shard_id)
                time.sleep(config.poll_seconds)
            idle_since = time.monotonic()
            continue
        if job_id is None:
            if idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                break
            time.sleep(config.poll_seconds)
            continue
        log.info("worker %s runs job %s", worker_id, job_id)
        try:
            status = run_claimed(job_id, ctx, _no_broker)
        except Exception as err:  # a bug or a resource failure: fail this job, keep the worker alive
            log.exception("job %s crashed", job_id)
            status = fail_crashed(ctx, job_id, err)
        log.info("job %s: %s", job_id, status)
        ran, idle_since = ran + 1, time.monotonic()
    engine.dispose()
    return ran


def _worker_main(config: WorkerConfig, worker_id: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Embedded workers share the API's cores: model work yields to request handling, which keeps the
    # API's latency while a job runs (bench/api_load.py) without slowing the job on an idle machine.
    os.nice(10)
    worker_loop(config, worker_id)


class LocalExecutor:
    """Owns the worker processes of the embedded set-up and respawns any that die.

    A worker killed by the OOM killer or a segfault in a native kernel must not leave the server
    accepting jobs that nobody runs; the replacement re-queues the dead worker's job once its lease
    expires (`claim_next_job` settles expired leases).
    """

    def __init__(self, config: WorkerConfig, concurrency: int = 1, supervise_seconds: float = 1.0) -> None:
        self.config, self.concurrency, self.supervise_seconds = config, concurrency, supervise_seconds
        self.processes: list[mp.process.BaseProcess] = []
        self.respawns = 0
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def _spawn(self, slot: int) -> mp.process.BaseProcess:
        worker_id = f"{socket.gethostname()}:{os.getpid()}:w{slot}.{self.respawns}"
        process = mp.get_context("spawn").Process(target=_worker_main, args=(self.config, worker_id), name=f"carrygate-worker-{slot}",
                                                  daemon=True)
        process.start()
        return process

    def start(self) -> None:
        """Start the workers; raises ValueError first if CARRYGATE_DEVICE is missing or unusable."""
        from carrygate.models.devices import check_device

        check_device(self.config.device)
        engine = make_engine(self.config.database_url)
        with session_factory(engine)() as session:
            requeued = requeue_expired(session)
        engine.dispose()
        if requeued:
            log.info("re-queued %d job(s) whose worker died", requeued)
        self._stopping.clear()
        self.processes = [self._spawn(i) for i in range(self.concurrency)]
        self._supervisor = threading.Thread(target=self._supervise, name="carrygate-supervisor", daemon=True)
        self._supervisor.start()

    def _supervise(self) -> None:
        while not self._stopping.wait(self.supervise_seconds):
            for slot, process in enumerate(self.processes):
                if not process.is_alive() and not self._stopping.is_set():
                    log.warning("worker %s exited with code %s; starting a new one", process.name, process.exitcode)
                    self.respawns += 1
                    self.processes[slot] = self._spawn(slot)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(timeout)
            if process.is_alive():
                process.kill()
        self.processes.clear()

    def alive(self) -> int:
        return sum(p.is_alive() for p in self.processes)
