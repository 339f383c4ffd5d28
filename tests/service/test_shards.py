"""Puzzle shards on real Redis and two real Celery worker subprocesses (PostgreSQL, so partials go through JSONB).

A job split into 3 shards gives the unsharded job's result (every number, per-puzzle arrays included)
and verdicts; both workers run shards; kill -9 of the worker running a shard -> that shard runs again
elsewhere, one verdict set, the same result; cancelling stops the shards; a deterministic failure in
one shard fails the job.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from carrygate.app.main import create_app
from carrygate.app.settings import Settings
from carrygate.store.sessions import make_engine, session_factory
from carrygate.store.tables import Job, JobShard
from carrygate.workers.artifacts import ArtifactStore
from carrygate.workers.context import WorkerContext
from carrygate.workers.distributed import claim_job
from carrygate.workers.pipeline import run_job
from carrygate.workers.queue import now
from carrygate.workers.shards import claim_shard, fan_out, run_shard, shard_ranges
from tests.conftest import make_tiny_zoo_model
from tests.service.test_celery import INT8, NAIVE, queue, settings_for, wait_for, workers  # noqa: F401  (fixtures)

PUZZLES = 60
OPTIONS = {"batch_size": 2, "labels": True}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 6 ACT steps and batches of 2: a shard takes seconds, long enough to be killed in the middle
    return make_tiny_zoo_model(tmp_path_factory.mktemp("zoo") / "tiny", steps=6, puzzles=PUZZLES, seed=1)


def _shards(database_url: str, job_id: str) -> list[JobShard]:
    engine = make_engine(database_url)
    try:
        with session_factory(engine)() as session:
            rows = list(session.query(JobShard).filter(JobShard.job_id == job_id).order_by(JobShard.index))
            session.expunge_all()
        return rows
    finally:
        engine.dispose()


def _comparable(job: dict[str, Any]) -> dict[str, Any]:
    result = dict(job["result"])
    del result["seconds"]  # compute time, the one number that may differ
    del result["reference_cached"]  # how the reference was obtained (an unsharded job may look it up; shards do not)
    return result


def _verdicts(client: TestClient, job_id: str) -> list[tuple[Any, ...]]:
    """Candidate name, decision and every rule (observed values included) of each verdict, job-level first."""
    return [(v["candidate"], v["decision"], v["rules"]) for v in client.get(f"/jobs/{job_id}/verdict").json()["data"]]


def test_shard_ranges_cut_on_batch_boundaries() -> None:
    assert shard_ranges(60, 2, 3) == [(0, 20), (20, 40), (40, 60)]
    assert shard_ranges(25, 4, 3) == [(0, 8), (8, 16), (16, 25)]  # 7 batches: 2, 2, 3 (the last one short)
    assert shard_ranges(5, 4, 3) == [(0, 4), (4, 5)]  # never more shards than batches
    assert shard_ranges(0, 4, 3) == []


def test_sharded_job_equals_unsharded_and_survives_kill_9(tmp_path: Path, pg_url: str, queue: str,  # noqa: F811
                                                         checkpoint: Path, workers: Any) -> None:  # noqa: F811
    settings = settings_for(pg_url, tmp_path, queue, lease_seconds=3, heartbeat_seconds=0.25)
    pool = workers(settings)
    processes = {name: pool.start(name) for name in ("a", "b")}
    pool.wait_ready("a"), pool.wait_ready("b")
    with TestClient(create_app(settings)) as client:
        ckpt = client.post("/checkpoints/register", json={"path": str(checkpoint)}).json()["id"]

        def submit(**options: Any) -> str:
            response = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [INT8, NAIVE], "options": OPTIONS | options})
            assert response.status_code == 202, response.text
            return str(response.json()["id"])

        single = wait_for(client, submit())
        assert single["status"] == "succeeded", single["error"]
        assert single["result"]["candidates"][1]["fidelity"]["mean"] < 0.9999  # int4-naive moves the trajectory: not vacuous

        sharded_id = submit(shards=3)
        sharded = wait_for(client, sharded_id)
        assert sharded["status"] == "succeeded", (sharded["error"], pool.log("a")[-2000:], pool.log("b")[-2000:])
        assert _comparable(sharded) == _comparable(single)  # every float of the result, per-puzzle arrays included
        assert sharded["puzzles_done"] == PUZZLES and _verdicts(client, sharded_id) == _verdicts(client, single["id"])
        shards = _shards(pg_url, sharded_id)
        assert [(s.puzzle_start, s.puzzle_stop, s.status, s.attempts) for s in shards] == \
            [(0, 20, "done", 1), (20, 40, "done", 1), (40, 60, "done", 1)]
        assert len({s.lease_owner for s in shards}) == 2  # both workers ran shards

        killed_id = submit(shards=3)
        deadline, victim = time.monotonic() + 60, None
        while victim is None and time.monotonic() < deadline:
            victim = next((s for s in _shards(pg_url, killed_id) if s.status == "running" and 0 < s.puzzles_done <= 10), None)
            time.sleep(0.05)
        assert victim is not None and victim.lease_owner is not None, "no shard seen mid-run"
        pid = int(victim.lease_owner.rsplit(":", 1)[1])  # worker ids are celery:<host>:<pid>
        assert pid in {p.pid for p in processes.values()}
        os.kill(pid, signal.SIGKILL)
        killed = wait_for(client, killed_id)
        assert killed["status"] == "succeeded", killed["error"]
        rerun = next(s for s in _shards(pg_url, killed_id) if s.index == victim.index)
        assert rerun.status == "done" and rerun.attempts == 2 and rerun.lease_owner != victim.lease_owner
        assert _comparable(killed) == _comparable(single)
        assert _verdicts(client, killed_id) == _verdicts(client, single["id"])  # one job verdict + one per candidate

        cancelled_id = submit(shards=3)
        deadline = time.monotonic() + 60
        while not any(s.puzzles_done > 0 for s in _shards(pg_url, cancelled_id)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.post(f"/jobs/{cancelled_id}/cancel").status_code == 200
        cancelled = wait_for(client, cancelled_id)
        assert cancelled["status"] == "cancelled" and cancelled["result"] is None and cancelled["puzzles_done"] < PUZZLES


def test_a_deterministic_failure_in_one_shard_fails_the_job(tmp_path: Path, sqlite_url: str, checkpoint: Path) -> None:
    """In-process (no broker): fan out, then the registered weights change under the shards."""
    folder = tmp_path / "registered"
    shutil.copytree(checkpoint, folder)
    settings = Settings(data_dir=tmp_path / "data", database_url=sqlite_url, executor="celery", lease_seconds=30, heartbeat_seconds=0.2)
    with TestClient(create_app(settings, start_workers=False, start_dispatchers=False)) as client:
        ckpt = client.post("/checkpoints/register", json={"path": str(folder)}).json()["id"]
        body = {"checkpoint_id": ckpt, "candidates": [INT8], "options": {"batch_size": 4, "limit": 16, "shards": 2}}
        job_id = client.post("/jobs", json=body).json()["id"]
        engine = make_engine(sqlite_url)
        try:
            ctx = WorkerContext(session_factory(engine), ArtifactStore(settings.artifact_store), "w1", 30, 0.2, tmp_path / "cache")
            ctx.cache_dir.mkdir()
            with ctx.session_factory() as session:
                assert claim_job(session, job_id, "w1", 30)
            sent: list[str] = []
            assert fan_out(job_id, ctx, sent.append) == "sharded" and len(sent) == 2
            weights = folder / "model.safetensors"
            weights.write_bytes(weights.read_bytes() + b" ")  # no longer the registered file
            other = replace(ctx, worker_id="w2")
            assert run_shard(sent[0], other, sent.append) == "failed"
            assert run_shard(sent[1], other, sent.append) == "skipped"  # the job is over
        finally:
            engine.dispose()
        job = client.get(f"/jobs/{job_id}").json()
        assert job["status"] == "failed" and job["error"].startswith("shard 0: checkpoint:") and "changed" in job["error"]
        assert job["result"] is None and job["verdict"] is None


def test_when_every_shard_worker_is_gone_the_redispatched_job_resends_the_unfinished_shard(tmp_path: Path, sqlite_url: str,
                                                                                          checkpoint: Path) -> None:
    """In-process on SQLite: one shard done, the other's worker dead and the job's lease run out -> the
    dispatcher's re-sent job (`claim_job` + `fan_out`) sends only the unfinished shard; its run reduces
    to the unsharded job's result."""
    settings = Settings(data_dir=tmp_path / "data", database_url=sqlite_url, executor="celery", lease_seconds=30, heartbeat_seconds=0.2)
    with TestClient(create_app(settings, start_workers=False, start_dispatchers=False)) as client:
        ckpt = client.post("/checkpoints/register", json={"path": str(checkpoint)}).json()["id"]
        body = {"checkpoint_id": ckpt, "candidates": [INT8, NAIVE], "options": {"batch_size": 4, "limit": 20}}
        single_id = client.post("/jobs", json=body).json()["id"]
        sharded_id = client.post("/jobs", json=body | {"options": body["options"] | {"shards": 2}}).json()["id"]
        engine = make_engine(sqlite_url)
        try:
            ctx = WorkerContext(session_factory(engine), ArtifactStore(settings.artifact_store), "w1", 30, 0.2, tmp_path / "cache")
            ctx.cache_dir.mkdir()
            with ctx.session_factory() as session:
                assert claim_job(session, single_id, "w1", 30) and claim_job(session, sharded_id, "w1", 30)
            assert run_job(single_id, ctx) == "succeeded"
            sent: list[str] = []
            assert fan_out(sharded_id, ctx, sent.append) == "sharded" and len(sent) == 2
            assert run_shard(sent[0], replace(ctx, worker_id="w2"), sent.append) == "done"
            with ctx.session_factory() as session:
                assert claim_shard(session, sent[1], "dead", lease_seconds=0.01)  # its worker dies at once
                session.execute(update(Job).where(Job.id == sharded_id).values(lease_expires_at=now() - timedelta(seconds=1)))
                session.commit()  # no shard beats any more: the job's lease runs out too
            time.sleep(0.05)
            resent: list[str] = []
            with ctx.session_factory() as session:
                assert claim_job(session, sharded_id, "w3", 30)  # what the dispatcher's re-sent message does
            assert fan_out(sharded_id, replace(ctx, worker_id="w3"), resent.append) == "sharded"
            assert resent == [sent[1]]
            assert run_shard(sent[1], replace(ctx, worker_id="w3"), resent.append) == "succeeded"
        finally:
            engine.dispose()
        single, sharded = client.get(f"/jobs/{single_id}").json(), client.get(f"/jobs/{sharded_id}").json()
        assert sharded["status"] == "succeeded" and sharded["attempts"] == 2
        assert _comparable(sharded) == _comparable(single) and _verdicts(client, sharded_id) == _verdicts(client, single_id)


def test_embedded_workers_run_the_shards_side_by_side(tmp_path: Path, sqlite_url: str, checkpoint: Path) -> None:
    """The embedded executor (two worker processes, SQLite): shards=3 over 40 puzzles in batches of 2
    (6 + 7 + 7 batches) gives the unsharded result, and both processes ran shards."""
    settings = Settings(data_dir=tmp_path / "data", database_url=sqlite_url, lease_seconds=30, heartbeat_seconds=0.25,
                        worker_concurrency=2)
    with TestClient(create_app(settings)) as client:
        ckpt = client.post("/checkpoints/register", json={"path": str(checkpoint)}).json()["id"]
        body = {"checkpoint_id": ckpt, "candidates": [INT8, NAIVE], "options": OPTIONS | {"limit": 40}}
        single = wait_for(client, client.post("/jobs", json=body).json()["id"])
        sharded_id = client.post("/jobs", json=body | {"options": body["options"] | {"shards": 3}}).json()["id"]
        sharded = wait_for(client, sharded_id)
        assert single["status"] == sharded["status"] == "succeeded", (single["error"], sharded["error"])
        assert _comparable(sharded) == _comparable(single) and _verdicts(client, sharded_id) == _verdicts(client, single["id"])
    shards = _shards(sqlite_url, sharded_id)
    assert [(s.puzzle_start, s.puzzle_stop, s.status) for s in shards] == [(0, 12, "done"), (12, 26, "done"), (26, 40, "done")]
    assert len({s.lease_owner for s in shards}) == 2  # both worker processes ran shards
