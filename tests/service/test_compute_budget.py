"""Every job has a compute budget (issue 13, class 3).

- refused at submission above CARRYGATE_MAX_JOB_GFLOP, with a 422 that states the cost and the limit;
- depth and size fields capped in the schemas;
- the worker checks the budget again with the real config and probe, and stops a job that runs past
  CARRYGATE_MAX_JOB_SECONDS, failing it with that reason;
- a cancelled long job frees its worker within seconds (cancellation is polled before every ACT step),
  and a small job queued behind it starts.

Real API (on a loopback port), real worker processes, SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from carrygate.app.main import create_app
from carrygate.models.budget import job_cost
from carrygate.models.checkpoint import load_checkpoint
from carrygate.models.compress.spec import CompressionSpec
from tests.conftest import make_tiny_zoo_model
from tests.service.live_server import live_server
from tests.service.test_api import INT8, settings_for, start_worker
from tests.service.waiting import FINISHED

# One ACT step of this candidate is 8 x 9 x 2 block applications (tens of milliseconds on the tiny model,
# about a second on this shared machine under load), and it runs 1024 of them per batch of one puzzle:
# most of a minute per batch even when idle, so only a per-step check stops it within seconds.
LONG = {"name": "deep", "depth": {"H_cycles": 8, "L_cycles": 8, "halt_max_steps": 1024}}
ONE_PER_BATCH = {"batch_size": 1}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_zoo_model(tmp_path_factory.mktemp("zoo") / "tiny", steps=3, puzzles=16, seed=0)


def cost(tiny: Path, candidates: list[dict[str, Any]], puzzles: int) -> float:
    return job_cost(load_checkpoint(tiny).config, [CompressionSpec.model_validate(c) for c in candidates], puzzles).gflop


def wait(client: httpx.Client, job_id: str, statuses: tuple[str, ...] = FINISHED, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def test_a_job_over_the_budget_is_refused_at_submission(database_url: str, tmp_path: Path, tiny: Path) -> None:
    limit = cost(tiny, [LONG], 16) * 0.9  # the long job on 16 puzzles is just over; on 8 puzzles well under
    with live_server(create_app(settings_for(database_url, tmp_path, max_job_gflop=limit), start_workers=False)) as client:
        ckpt = client.post("/checkpoints/register", json={"path": str(tiny)}).json()["id"]
        for probe, options in [({"builder": "sudoku", "size": 16}, {}), ({"dataset_path": str(tiny / "data")}, {"limit": 16})]:
            response = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [LONG], "probe": probe, "options": options})
            assert response.status_code == 422, response.text
            detail = response.json()["detail"]
            stated = float(re.search(r"the job costs ([0-9.e+]+) GFLOP", detail).group(1))
            assert stated > limit and f"limit of {limit:.4g} GFLOP" in detail and "CARRYGATE_MAX_JOB_GFLOP" in detail, detail
            assert stated == pytest.approx(cost(tiny, [LONG], 16), rel=1e-3)
        assert client.get("/jobs").json()["count"] == 0  # nothing was queued
        # under the limit: accepted; a dataset probe without a limit is judged on one puzzle (the worker sees the rest)
        small = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [LONG], "probe": {"builder": "sudoku", "size": 8}})
        assert small.status_code == 202, small.text
        assert client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [LONG]}).status_code == 202
        # and the lower bound alone can already be over: 64 candidates on one puzzle
        many = [dict(LONG, name=f"deep{i}") for i in range(64)]
        response = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": many})
        assert response.status_code == 422 and "at least" in response.text, response.text


@pytest.mark.parametrize(("body", "field"), [
    ({"candidates": [{"depth": {"H_cycles": 10**9}}]}, "H_cycles"),
    ({"candidates": [{"depth": {"L_cycles": 65}}]}, "L_cycles"),
    ({"candidates": [{"depth": {"halt_max_steps": 1025}}]}, "halt_max_steps"),
    ({"candidates": [INT8], "options": {"limit": 10**9}}, "limit"),
    ({"candidates": [INT8], "options": {"batch_size": 10**6}}, "batch_size"),
    ({"candidates": [INT8], "probe": {"builder": "sudoku", "size": 10**9}}, "size"),
    ({"candidates": [INT8], "probe": {"builder": "maze", "args": {"size_side": 10**9}}}, "size_side"),
    ({"candidates": [INT8], "probe": {"builder": "sudoku", "args": {"givens": 10**9}}}, "givens"),
    ({"candidates": [INT8], "probe": {"builder": "sudoku", "args": {"unknown": 1}}}, "unknown"),
    ({"candidates": [INT8], "probe": {"builder": "sudoku", "seed": 2**40}}, "seed"),
    ({"candidates": [INT8] * 65}, "candidates"),
])
def test_sizes_that_multiply_work_are_capped(database_url: str, tmp_path: Path, body: dict[str, Any], field: str) -> None:
    with live_server(create_app(settings_for(database_url, tmp_path), start_workers=False)) as client:
        response = client.post("/jobs", json={"checkpoint_id": "any", **body})
        assert response.status_code == 422 and field in response.text, response.text


def test_the_worker_rechecks_the_budget_and_times_a_job_out(database_url: str, tmp_path: Path, tiny: Path) -> None:
    over = [dict(LONG, name=f"deep{i}") for i in range(4)]
    worker_limit = 2 * cost(tiny, [LONG], 16)  # between the two jobs below
    assert cost(tiny, over, 16) > worker_limit
    api = settings_for(database_url, tmp_path)  # the API's default budget lets both through
    with live_server(create_app(api, start_workers=False)) as client:
        ckpt = client.post("/checkpoints/register", json={"path": str(tiny)}).json()["id"]
        too_big = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": over}).json()["id"]
        too_long = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [LONG], "options": ONE_PER_BATCH}).json()["id"]
        worker = start_worker(api, CARRYGATE_MAX_JOB_GFLOP=str(worker_limit), CARRYGATE_MAX_JOB_SECONDS="3")
        try:
            refused, timed_out = wait(client, too_big), wait(client, too_long)
        finally:
            worker.kill()
    assert refused["status"] == "failed" and refused["error"].startswith("compute budget: the job costs"), refused["error"]
    assert timed_out["status"] == "failed" and "CARRYGATE_MAX_JOB_SECONDS (3 s)" in timed_out["error"], timed_out["error"]
    ran = datetime.fromisoformat(timed_out["finished_at"]) - datetime.fromisoformat(timed_out["started_at"])
    assert ran.total_seconds() < 3 + 20, ran  # stopped within a step of the deadline (plus load and slack), not after the batch
    assert timed_out["puzzles_done"] == 0 and timed_out["verdict"] is None


def test_a_cancelled_long_job_frees_its_worker_within_seconds(database_url: str, tmp_path: Path, tiny: Path) -> None:
    settings = settings_for(database_url, tmp_path, heartbeat_seconds=0.5)
    with live_server(create_app(settings)) as client:  # the embedded executor: one worker process
        ckpt = client.post("/checkpoints/register", json={"path": str(tiny)}).json()["id"]
        long = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [LONG], "options": ONE_PER_BATCH}).json()["id"]
        wait(client, long, ("running",))
        time.sleep(2)  # well inside the first batch
        small = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [INT8], "options": {"limit": 4}}).json()["id"]
        assert client.get(f"/jobs/{small}").json()["status"] == "queued"  # the only worker is busy
        cancelled_at = time.monotonic()
        assert client.post(f"/jobs/{long}/cancel").status_code == 200
        stopped = wait(client, long, timeout=30)
        freed = time.monotonic() - cancelled_at
        started = wait(client, small, ("running", *FINISHED), timeout=30)
        behind = time.monotonic() - cancelled_at
        assert stopped["status"] == "cancelled" and stopped["puzzles_done"] == 0, stopped
        # One heartbeat (0.5 s) plus one ACT step, where a batch is 1024 steps (most of a minute even on an idle
        # machine); the slack is for this 2-core machine shared with training runs (typically 2-5 s here).
        assert freed < 15, f"the cancelled job took {freed:.1f} s to stop"
        assert behind < 20, f"the next job started {behind:.1f} s after the cancel"
        assert started["status"] in ("running", "succeeded"), started
        assert wait(client, small)["status"] == "succeeded"
