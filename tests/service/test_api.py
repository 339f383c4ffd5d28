"""The service end to end: real API (in-process ASGI), real worker processes, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from carrygate.app.main import create_app
from carrygate.app.settings import Settings
from carrygate.models.checkpoint import save_checkpoint
from tests.conftest import REPO, make_tiny_zoo_model
from tests.service.waiting import wait_for

INT8 = {"name": "int8", "weights": {"method": "int8-channel"}}
NAIVE = {"name": "int4-naive", "weights": {"method": "int4", "granularity": "per_tensor", "symmetric": True}}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small TRM in our format with 48 shipped probe puzzles (sudoku layout)."""
    return make_tiny_zoo_model(tmp_path_factory.mktemp("zoo") / "tiny", steps=3, puzzles=48, seed=0)


def settings_for(database_url: str, tmp_path: Path, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, lease_seconds=kw.pop("lease_seconds", 30),
                    heartbeat_seconds=kw.pop("heartbeat_seconds", 0.5), **kw)


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    """API with the embedded executor (one spawned worker process)."""
    with TestClient(create_app(settings_for(database_url, tmp_path))) as c:
        yield c




def register(client: TestClient, path: Path) -> str:
    response = client.post("/checkpoints/register", json={"path": str(path)})
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


def test_submit_progress_verdict_and_idempotency(client: TestClient, tiny_checkpoint: Path) -> None:
    ckpt = register(client, tiny_checkpoint)
    body = {"checkpoint_id": ckpt, "candidates": [INT8, NAIVE], "policy": {"min_fidelity_mean": 0.9, "min_fidelity_p05": None,
                                                                       "min_answer_agreement": None, "max_puzzle_exact_drop": None,
                                                                       "max_predicted_exact_drop": None}}
    first = client.post("/jobs", json=body, headers={"Idempotency-Key": "release-42"})
    assert first.status_code == 202 and first.headers["location"].endswith(first.json()["id"])
    again = client.post("/jobs", json=body, headers={"Idempotency-Key": "release-42"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    job = wait_for(client, first.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == 1.0 and job["puzzles_done"] == job["puzzles_total"] == 48
    assert job["task"] == "sudoku"  # stored on the probe set from the shipped data/, which no builder named
    names = [c["name"] for c in job["result"]["candidates"]]
    assert names == ["int8", "int4-naive"]
    by_name = {v["candidate"]: v for v in job["candidate_verdicts"]}
    assert by_name["int8"]["decision"] == "go", by_name["int8"]["rules"]
    fid_rule = next(r for r in by_name["int4-naive"]["rules"] if r["rule"] == "min_fidelity_mean")
    assert fid_rule["passed"] is False and fid_rule["observed"] < 0.9
    assert job["verdict"]["decision"] == "no_go"
    verdict = client.get(f"/jobs/{job['id']}/verdict").json()
    assert verdict["count"] == 3 and verdict["data"][0]["scope"] == "job"
    assert client.get("/verdicts").json()["count"] == 1
    assert client.get("/jobs", params={"status": "succeeded"}).json()["count"] == 1
    metrics = client.get("/metrics").text
    assert 'carrygate_jobs{status="succeeded"} 1' in metrics and "carrygate_job_duration_seconds_count 1" in metrics
    assert client.get("/readyz").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"candidates": [{"weights": {"method": "int4", "granularity": "group"}}]}, "group_size"),
        ({"candidates": [{"weigths": {}}]}, "weigths"),
        ({"candidates": []}, "candidates"),
        ({"candidates": [INT8], "policy": {"min_fidelity_mean": 2}}, "min_fidelity_mean"),
    ],
)
def test_malformed_requests_are_422_naming_the_field(client: TestClient, tiny_checkpoint: Path, body: dict, field: str) -> None:
    response = client.post("/jobs", json={"checkpoint_id": register(client, tiny_checkpoint), **body})
    assert response.status_code == 422
    assert field in response.text


def test_spec_that_does_not_fit_is_rejected_at_submission(client: TestClient, tiny_checkpoint: Path) -> None:
    # no Linear layer is named like this (checkable from the stored config)
    spec = {"weights": {"method": "int8-channel"}, "include": ["no_such_layer"]}
    response = client.post("/jobs", json={"checkpoint_id": register(client, tiny_checkpoint), "candidates": [spec]})
    assert response.status_code == 422 and "candidates[0]" in response.text and "no_such_layer" in response.text


def test_unknown_ids_are_404(client: TestClient) -> None:
    assert client.post("/jobs", json={"checkpoint_id": "nope", "candidates": [INT8]}).status_code == 404
    assert client.get("/jobs/nope").status_code == 404
    assert client.get("/checkpoints/nope").status_code == 404
    assert client.get("/jobs/nope/verdict").status_code == 404


def test_list_jobs_filters_by_tag_status_and_pages_in_the_database(database_url: str, tmp_path: Path, tiny_checkpoint: Path) -> None:
    with TestClient(create_app(settings_for(database_url, tmp_path), start_workers=False)) as client:
        ckpt = register(client, tiny_checkpoint)
        tag_sets = [["release", "v1"], ["v1"], ["release"], [], ["release-candidate"]]
        ids = [client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [INT8], "tags": tags}).json()["id"] for tags in tag_sets]
        client.post(f"/jobs/{ids[2]}/cancel")
        release = client.get("/jobs", params={"tag": "release"}).json()
        # exact membership, not substring: "release-candidate" is not "release"
        assert release["count"] == 2 and {j["id"] for j in release["data"]} == {ids[0], ids[2]}
        assert client.get("/jobs", params={"tag": "release", "status": "queued"}).json()["count"] == 1
        assert client.get("/jobs", params={"tag": "nope"}).json() == {"data": [], "count": 0}
        first, second = (client.get("/jobs", params={"limit": 2, "offset": o}).json() for o in (0, 2))
        assert first["count"] == second["count"] == 5
        paged = [j["id"] for j in first["data"] + second["data"]]
        assert len(set(paged)) == 4 and set(paged) <= set(ids)


def test_raw_upload_streams_dedups_and_refuses_oversize(database_url: str, tmp_path: Path, tiny_checkpoint: Path) -> None:
    import base64
    import hashlib

    weights = (tiny_checkpoint / "model.safetensors").read_bytes()
    config = base64.b64encode((tiny_checkpoint / "config.json").read_bytes()).decode()
    settings = settings_for(database_url, tmp_path, upload_limit_bytes=len(weights) + 10)
    with TestClient(create_app(settings, start_workers=False)) as client:
        chunked = (weights[i : i + 4096] for i in range(0, len(weights), 4096))  # no Content-Length: the limit is enforced while streaming
        first = client.put("/checkpoints/raw/model.safetensors", content=chunked, headers={"X-Carrygate-Config": config},
                           params={"name": "tiny"})
        assert first.status_code == 201, first.text
        assert first.json()["sha256"] == hashlib.sha256(weights).hexdigest() and first.json()["size_bytes"] == len(weights)
        # the same bytes through the multipart route are the same checkpoint
        multipart = client.post("/checkpoints", files={"file": ("model.safetensors", weights),
                                                       "config": ("config.json", (tiny_checkpoint / "config.json").read_bytes())})
        assert multipart.status_code == 200 and multipart.json()["id"] == first.json()["id"]
        missing = client.put("/checkpoints/raw/model.safetensors", content=weights)
        assert missing.status_code == 422 and "config" in missing.text
        bad = client.put("/checkpoints/raw/step_1", content=b"x", headers={"X-Carrygate-Config": "not base64!"})
        assert bad.status_code == 422 and "x-carrygate-config" in bad.text
        too_big = client.put("/checkpoints/raw/step_1", content=(b"x" * 4096 for _ in range(1 + len(weights) // 4096)))
        assert too_big.status_code == 413
        assert client.get("/checkpoints").json()["count"] == 1
    stored = [p for p in Path(settings.artifact_store).rglob("*") if p.is_file()]
    assert len(stored) == 1  # the oversize stream left nothing behind


def test_upload_over_limit_is_413_and_stores_nothing(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(database_url, tmp_path, upload_limit_bytes=1000)
    with TestClient(create_app(settings, start_workers=False)) as client:
        response = client.post("/checkpoints", files={"file": ("step_1", b"x" * 5000)})
        assert response.status_code == 413
        assert client.get("/checkpoints").json()["count"] == 0
    stored = list((Path(settings.artifact_store)).rglob("*"))
    assert not [p for p in stored if p.is_file()]


def test_upload_dedup_and_corrupt_checkpoint_fails_only_its_job(client: TestClient, tiny_checkpoint: Path, tmp_path: Path) -> None:
    files = {"file": ("model.safetensors", (tiny_checkpoint / "model.safetensors").read_bytes()),
             "config": ("config.json", (tiny_checkpoint / "config.json").read_bytes())}
    first = client.post("/checkpoints", files=files)
    assert first.status_code == 201
    assert client.post("/checkpoints", files=files).status_code == 200  # same sha256
    other_config = json.loads(files["config"][1]) | {"halt_max_steps": 1}
    conflict = client.post("/checkpoints", files={**files, "config": ("config.json", json.dumps(other_config).encode())})
    assert conflict.status_code == 409 and first.json()["id"] in conflict.text
    assert client.get("/checkpoints").json()["count"] == 1
    corrupt = client.post("/checkpoints", files={"file": ("step_5", b"\x80\x04not a zip at all"),
                                                 "config": ("all_config.yaml", b"arch: {hidden_size: 16}\n")})
    assert corrupt.status_code == 201
    probe = {"dataset_path": str(tiny_checkpoint / "data")}
    bad = client.post("/jobs", json={"checkpoint_id": corrupt.json()["id"], "candidates": [INT8], "probe": probe}).json()
    good = client.post("/jobs", json={"checkpoint_id": first.json()["id"], "candidates": [INT8], "probe": probe}).json()
    bad_job, good_job = wait_for(client, bad["id"]), wait_for(client, good["id"])
    assert bad_job["status"] == "failed" and "not a readable torch checkpoint" in bad_job["error"]
    # judged (interval rules can leave a borderline candidate inconclusive, never unjudged)
    assert good_job["status"] == "succeeded" and good_job["verdict"]["decision"] in ("go", "no_go", "inconclusive")
    assert good_job["task"] == "sudoku"


def test_non_finite_candidate_gets_a_no_go(client: TestClient, tiny_checkpoint: Path, tmp_path: Path) -> None:
    from carrygate.models.checkpoint import load_checkpoint

    broken = load_checkpoint(tiny_checkpoint).model
    with torch.no_grad():
        broken.L_level.layers[0].mlp.down_proj.weight.fill_(float("inf"))
    save_checkpoint(broken, tmp_path / "broken")
    body = {"checkpoint_id": register(client, tiny_checkpoint), "candidates": [{"name": "nan", "checkpoint": str(tmp_path / "broken")}]}
    job = wait_for(client, client.post("/jobs", json=body).json()["id"])
    assert job["status"] == "succeeded"
    verdict = job["candidate_verdicts"][0]
    assert verdict["decision"] == "no_go" and verdict["rules"][0]["rule"] == "finite" and verdict["rules"][0]["passed"] is False


def test_cancel_queued_and_running_jobs(database_url: str, tmp_path: Path, tiny_checkpoint: Path) -> None:
    with TestClient(create_app(settings_for(database_url, tmp_path), start_workers=False)) as client:
        body = {"checkpoint_id": register(client, tiny_checkpoint), "candidates": [INT8], "options": {"batch_size": 1}}
        queued = client.post("/jobs", json=body).json()
        assert client.post(f"/jobs/{queued['id']}/cancel").json()["status"] == "cancelled"
        assert client.post(f"/jobs/{queued['id']}/cancel").status_code == 409
        running = client.post("/jobs", json=body).json()
        worker = start_worker(client.app.state.settings)
        try:
            wait_for(client, running["id"], ("running",))
            assert client.post(f"/jobs/{running['id']}/cancel").status_code == 200
            job = wait_for(client, running["id"])
            assert job["status"] == "cancelled" and job["puzzles_done"] < 48
        finally:
            worker.kill()


def start_worker(settings: Settings, **env: str) -> subprocess.Popen[bytes]:
    environment = os.environ | {
        "CARRYGATE_DATA_DIR": str(settings.data_dir), "CARRYGATE_DATABASE_URL": settings.database_url,
        "CARRYGATE_ARTIFACT_STORE": settings.artifact_store, "CARRYGATE_LEASE_SECONDS": str(settings.lease_seconds),
        "CARRYGATE_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
        # one torch thread: two OpenMP threads sharing a core with another process ran this job > 180 s
        "OMP_NUM_THREADS": "1", **env,
    }
    return subprocess.Popen([sys.executable, "-m", "carrygate.app", "worker"], cwd=REPO, env=environment,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_kill_9_worker_mid_job_reruns_with_one_verdict(database_url: str, tmp_path: Path, tiny_checkpoint: Path) -> None:
    settings = settings_for(database_url, tmp_path, lease_seconds=3, heartbeat_seconds=0.5)
    with TestClient(create_app(settings, start_workers=False)) as client:
        body = {"checkpoint_id": register(client, tiny_checkpoint), "candidates": [INT8, NAIVE], "options": {"batch_size": 2}}
        job_id = client.post("/jobs", json=body).json()["id"]
        first = start_worker(settings)
        wait_for(client, job_id, ("running",))
        deadline = time.monotonic() + 60
        while client.get(f"/jobs/{job_id}").json()["puzzles_done"] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        second = start_worker(settings)
        try:
            job = wait_for(client, job_id)
        finally:
            second.kill()
        assert job["status"] == "succeeded" and job["attempts"] == 2
        verdicts = client.get(f"/jobs/{job_id}/verdict").json()
        assert verdicts["count"] == 3  # one job-level + one per candidate, however often it ran
        assert client.get("/verdicts").json()["count"] == 1


def test_api_keys_guard_mutating_routes(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(database_url, tmp_path, api_keys=["s3cret"])
    with TestClient(create_app(settings, start_workers=False)) as client:
        assert client.post("/jobs", json={"checkpoint_id": "x", "candidates": [INT8]}).status_code == 401
        assert client.post("/jobs", json={"checkpoint_id": "x", "candidates": [INT8]}, headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/jobs", json={"checkpoint_id": "x", "candidates": [INT8]}, headers={"X-API-Key": "s3cret"}).status_code == 404
        # once a key exists, reads need one too (issue 5)
        assert client.get("/jobs").status_code == 401 and client.get("/jobs", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_embedded_worker_killed_mid_job_is_respawned_and_the_job_reruns(database_url: str, tmp_path: Path, tiny_checkpoint: Path) -> None:
    settings = settings_for(database_url, tmp_path, lease_seconds=3, heartbeat_seconds=0.5)
    with TestClient(create_app(settings)) as client:
        executor = client.app.state.executor
        body = {"checkpoint_id": register(client, tiny_checkpoint), "candidates": [INT8], "options": {"batch_size": 2}}
        job_id = client.post("/jobs", json=body).json()["id"]
        wait_for(client, job_id, ("running",))
        victim = executor.processes[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)
        job = wait_for(client, job_id)
        assert job["status"] == "succeeded" and job["attempts"] == 2
        assert executor.respawns == 1 and executor.processes[0].pid != victim.pid
        assert client.get("/readyz").json() == {"status": "ok", "workers": 1}
        assert client.get(f"/jobs/{job_id}/verdict").json()["count"] == 2


def test_readyz_is_503_while_no_embedded_worker_is_alive(database_url: str, tmp_path: Path) -> None:
    with TestClient(create_app(settings_for(database_url, tmp_path))) as client:
        executor = client.app.state.executor
        executor._stopping.set()  # the supervisor stops respawning, as during shutdown
        executor._supervisor.join(5)
        executor.processes[0].kill()
        executor.processes[0].join(10)
        response = client.get("/readyz")
        assert response.status_code == 503 and response.json()["reason"] == "no embedded worker is alive"


def test_register_roots_confine_paths_and_a_changed_file_fails_its_job(database_url: str, tmp_path: Path, tiny_checkpoint: Path) -> None:
    import shutil

    allowed = tmp_path / "shared"
    copy = allowed / "tiny"
    shutil.copytree(tiny_checkpoint, copy)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "link").symlink_to(tiny_checkpoint)  # a symlink out of the root is outside too
    settings = settings_for(database_url, tmp_path, register_roots=[allowed])
    with TestClient(create_app(settings, start_workers=False)) as client:
        for outside in (tiny_checkpoint, allowed / ".." / "elsewhere" / "link"):
            response = client.post("/checkpoints/register", json={"path": str(outside)})
            assert response.status_code == 422 and "path" in response.text and "outside the allowed folders" in response.text
        ckpt = register(client, copy)
        body = {"checkpoint_id": ckpt, "candidates": [INT8], "probe": {"dataset_path": str(tiny_checkpoint / "data")}}
        response = client.post("/jobs", json=body)
        assert response.status_code == 422 and "probe.dataset_path" in response.text
        job_id = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [INT8]}).json()["id"]
        weights = copy / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF  # the file changes after registration
        weights.write_bytes(bytes(data))
        worker = start_worker(settings, CARRYGATE_REGISTER_ROOTS=str(allowed))
        try:
            job = wait_for(client, job_id)
        finally:
            worker.kill()
        assert job["status"] == "failed" and "changed since it was registered" in job["error"]
