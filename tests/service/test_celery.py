"""The Celery executor with real Redis and real `carrygate worker` (Celery) subprocesses.

Same verdicts as the embedded executor; kill -9 of a worker mid-job -> re-run elsewhere, one verdict;
cancellation; the dispatcher's send-once rules on both database backends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from carrygate.app.db import upgrade_to_head
from carrygate.app.main import celery_config, create_app
from carrygate.app.settings import Settings
from carrygate.store.sessions import make_engine, session_factory
from carrygate.store.tables import Checkpoint, Job, ProbeSet
from carrygate.workers.celery_app import create_celery, sender
from carrygate.workers.distributed import claim_job, dispatch_due, release_job
from carrygate.workers.queue import now
from tests.conftest import REPO, make_tiny_zoo_model
from tests.service.waiting import wait_for

BROKER = "redis://127.0.0.1:6379/0"
INT8 = {"name": "int8", "weights": {"method": "int8-channel"}}
NAIVE = {"name": "int4-naive", "weights": {"method": "int4", "granularity": "per_tensor", "symmetric": True}}
GROUP = {"name": "int4-channel", "weights": {"method": "int4", "granularity": "per_channel"}}
STRICT = {"min_fidelity_mean": 0.9, "min_fidelity_p05": None, "min_answer_agreement": None, "max_puzzle_exact_drop": None}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_zoo_model(tmp_path_factory.mktemp("zoo") / "tiny", steps=3, puzzles=24, seed=0)


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"carrygate-test-{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(BROKER)
    try:
        client.ping()
    except redis.ConnectionError as err:
        pytest.fail(f"Redis is not reachable at {BROKER} (.ci/run starts it): {err}")
    yield name
    client.delete(name, f"{name}\x06\x163", f"{name}\x06\x166", f"{name}\x06\x169")
    client.close()


def settings_for(database_url: str, tmp_path: Path, queue: str, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, executor="celery", broker_url=BROKER, celery_queue=queue,
                    lease_seconds=kw.pop("lease_seconds", 30), heartbeat_seconds=kw.pop("heartbeat_seconds", 0.5),
                    dispatch_poll_seconds=0.2, **kw)


class Workers:
    """`carrygate worker` subprocesses (Celery, solo pool) with their logs in tmp_path."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings, self.logs = settings, logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str) -> subprocess.Popen[bytes]:
        s = self.settings
        env = os.environ | {"CARRYGATE_EXECUTOR": "celery", "CARRYGATE_DATA_DIR": str(s.data_dir), "CARRYGATE_DATABASE_URL": s.database_url,
                            "CARRYGATE_ARTIFACT_STORE": s.artifact_store, "CARRYGATE_LEASE_SECONDS": str(s.lease_seconds),
                            "CARRYGATE_HEARTBEAT_SECONDS": str(s.heartbeat_seconds), "CARRYGATE_BROKER_URL": s.broker_url,
                            "OMP_NUM_THREADS": "1"}
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115  (closed with the process)
        process = subprocess.Popen([sys.executable, "-m", "carrygate.app", "worker", "--pool", "solo", "--concurrency", "1",
                                    "--queues", s.celery_queue, "--device", "cpu"], cwd=REPO, env=env, stdout=log, stderr=log)
        self.processes.append(process)
        return process

    def wait_ready(self, name: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = (self.logs / f"{name}.log").read_text(errors="replace")
            if " ready." in text:
                return
            time.sleep(0.2)
        raise AssertionError(f"celery worker {name} not ready:\n{text[-3000:]}")

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.terminate()
        for p in self.processes:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Any]:
    made: list[Workers] = []

    def make(settings: Settings) -> Workers:
        made.append(Workers(settings, tmp_path))
        return made[-1]

    yield make
    for w in made:
        w.stop()


def _outcome(job: dict[str, Any]) -> tuple[Any, ...]:
    fidelity = tuple(round(c["fidelity"]["mean"], 6) for c in job["result"]["candidates"])
    return job["verdict"]["decision"], tuple((v["candidate"], v["decision"]) for v in job["candidate_verdicts"]), fidelity


def _sweep(client: TestClient, checkpoint: Path) -> list[str]:
    """Three jobs on an uploaded checkpoint: its weights reach the workers through the artifact store."""
    files = {"file": ("model.safetensors", (checkpoint / "model.safetensors").read_bytes()),
             "config": ("config.json", (checkpoint / "config.json").read_bytes())}
    ckpt = client.post("/checkpoints", files=files).json()["id"]
    probe = {"dataset_path": str(checkpoint / "data")}
    bodies = [{"candidates": [INT8]}, {"candidates": [NAIVE, GROUP], "policy": STRICT}, {"candidates": [GROUP, INT8]}]
    responses = [client.post("/jobs", json={"checkpoint_id": ckpt, "probe": probe, **b}) for b in bodies]
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses]
    return [r.json()["id"] for r in responses]


def test_two_celery_workers_give_the_embedded_verdicts(tmp_path: Path, sqlite_url: str, pg_url: str, queue: str,
                                                       tiny_checkpoint: Path, workers: Any) -> None:
    embedded = Settings(data_dir=tmp_path / "embedded", database_url=sqlite_url, lease_seconds=30, heartbeat_seconds=0.5)
    with TestClient(create_app(embedded)) as client:
        expected = [_outcome(wait_for(client, j)) for j in _sweep(client, tiny_checkpoint)]
    settings = settings_for(pg_url, tmp_path, queue)
    pool = workers(settings)
    pool.start("a"), pool.start("b")
    pool.wait_ready("a"), pool.wait_ready("b")
    with TestClient(create_app(settings)) as client:
        jobs = [wait_for(client, j) for j in _sweep(client, tiny_checkpoint)]
    assert all(j["status"] == "succeeded" and j["attempts"] == 1 for j in jobs), [j["error"] for j in jobs]
    assert [_outcome(j) for j in jobs] == expected
    assert expected[1][0] == "no_go"  # the sweep holds a no_go, so agreement is not trivial
    engine = make_engine(pg_url)
    with session_factory(engine)() as session:
        owners = {session.get_one(Job, j["id"]).lease_owner for j in jobs}
    engine.dispose()
    assert len(owners) == 2, owners  # both workers ran jobs


def test_kill_9_celery_worker_mid_job_reruns_once_and_cancellation(tmp_path: Path, sqlite_url: str, queue: str,
                                                                   tiny_checkpoint: Path, workers: Any) -> None:
    settings = settings_for(sqlite_url, tmp_path, queue, lease_seconds=3, heartbeat_seconds=0.5)
    pool = workers(settings)
    first = pool.start("first")
    pool.wait_ready("first")
    with TestClient(create_app(settings)) as client:
        ckpt = client.post("/checkpoints/register", json={"path": str(tiny_checkpoint)}).json()["id"]
        body = {"checkpoint_id": ckpt, "candidates": [INT8, NAIVE], "options": {"batch_size": 1}}
        job_id = client.post("/jobs", json=body).json()["id"]
        wait_for(client, job_id, ("running",))
        deadline = time.monotonic() + 60
        while client.get(f"/jobs/{job_id}").json()["puzzles_done"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        pool.start("second")
        job = wait_for(client, job_id)
        assert job["status"] == "succeeded" and job["attempts"] == 2, (job["error"], pool.log("second")[-2000:])
        assert client.get(f"/jobs/{job_id}/verdict").json()["count"] == 3 and client.get("/verdicts").json()["count"] == 1

        running = client.post("/jobs", json=body).json()["id"]
        wait_for(client, running, ("running",))
        queued = client.post("/jobs", json=body).json()["id"]  # the only worker is busy
        assert client.post(f"/jobs/{queued}/cancel").json()["status"] == "cancelled"
        assert client.post(f"/jobs/{running}/cancel").status_code == 200
        cancelled = wait_for(client, running)
        assert cancelled["status"] == "cancelled" and cancelled["puzzles_done"] < 24
        assert client.get(f"/jobs/{queued}").json()["attempts"] == 0

        # a duplicate message (a redelivery after the visibility timeout, a second API) is harmless
        sender(create_celery(celery_config(settings)), queue)(job_id)
        deadline = time.monotonic() + 30
        while "is not claimable" not in pool.log("second") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert f"job {job_id} is not claimable" in pool.log("second")
        again = client.get(f"/jobs/{job_id}").json()
        assert again["attempts"] == 2 and client.get(f"/jobs/{job_id}/verdict").json()["count"] == 3


def _job(session: Any) -> str:
    probe = ProbeSet(builder="sudoku", builder_args={}, content_hash="0" * 64, puzzles=1)
    checkpoint = Checkpoint(sha256=uuid.uuid4().hex * 2, architecture="trm", config={}, size_bytes=1, storage_path="/x", source="upload")
    job = Job(checkpoint=checkpoint, probe_set=probe)
    session.add(job)
    session.commit()
    return job.id


def test_dispatch_sends_each_job_once_and_orphans_once_per_expiry(database_url: str) -> None:
    upgrade_to_head(database_url)
    engine = make_engine(database_url)
    factory = session_factory(engine)
    sent: list[str] = []
    try:
        with factory() as session:
            a, b = _job(session), _job(session)
        assert sorted(dispatch_due(factory, sent.append, redispatch_after=600)) == sorted([a, b])
        assert dispatch_due(factory, sent.append, redispatch_after=600) == []  # not twice
        with factory() as session:
            assert claim_job(session, a, "w1", lease_seconds=600) and not claim_job(session, a, "w2", lease_seconds=600)
            assert release_job(session, a, "w1") and session.get_one(Job, a).attempts == 0
            assert claim_job(session, a, "w1", lease_seconds=0.01)  # w1 "dies": its lease runs out at once
        time.sleep(0.05)
        assert dispatch_due(factory, sent.append, redispatch_after=600) == [a]  # the orphan is sent again
        assert dispatch_due(factory, sent.append, redispatch_after=600) == []  # once per expiry
        with factory() as session:
            assert claim_job(session, a, "w2", lease_seconds=600)
            session.get_one(Job, b).dispatched_at = now().replace(year=2000)  # a message the broker lost long ago
            session.commit()
        assert dispatch_due(factory, sent.append, redispatch_after=600) == [b]

        def broken(job_id: str) -> None:
            raise ConnectionError("broker down")

        with factory() as session:
            c = _job(session)
        assert dispatch_due(factory, broken, redispatch_after=600) == []
        with factory() as session:
            assert session.get_one(Job, c).dispatched_at is None  # unmarked: the next round sends it
    finally:
        engine.dispose()
