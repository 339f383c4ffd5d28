"""An onnxruntime candidate through the real job path: POST /jobs -> worker process -> stored .onnx
artifact, local ORT profile and latency/size rules in the verdict -> GET /jobs/{id}/artifacts/{name}."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from carrygate.app.main import create_app
from tests.conftest import make_tiny_zoo_model
from tests.service.test_api import register, settings_for, wait_for

ORT_DYNAMIC = {"name": "ort-dyn", "onnxruntime": {"quantization": "dynamic", "profile_repeats": 2}}
TORCH_INT8 = {"name": "int8", "weights": {"method": "int8-channel"}}


@pytest.fixture
def client(sqlite_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(sqlite_url, tmp_path))) as c:
        yield c


def test_ort_candidate_job_stores_a_downloadable_artifact(client: TestClient, tmp_path: Path) -> None:
    checkpoint = make_tiny_zoo_model(tmp_path / "zoo" / "tiny", steps=3, puzzles=8, seed=0)
    policy = {"min_fidelity_mean": 0.5, "min_fidelity_p05": None, "min_answer_agreement": None, "max_puzzle_exact_drop": None,
              "max_predicted_exact_drop": None, "max_step_latency_ms": 10_000, "max_artifact_bytes": 50_000_000}
    body = {"checkpoint_id": register(client, checkpoint), "candidates": [ORT_DYNAMIC, TORCH_INT8], "policy": policy,
            "options": {"limit": 8}}
    created = client.post("/jobs", json=body)
    assert created.status_code == 202, created.text
    job = wait_for(client, created.json()["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    ort_result, torch_result = job["result"]["candidates"]
    artifact, profile = ort_result["artifact"], ort_result["profile"]
    assert artifact["store_key"] and artifact["quantization"] == "dynamic"
    assert profile["puzzles"] == 2 and profile["step_latency_ms_p50"] > 0 and profile["ops"]
    assert torch_result["artifact"] is None and torch_result["profile"] is None
    verdicts = {v["candidate"]: v for v in job["candidate_verdicts"]}
    rules = {r["rule"]: r for r in verdicts["ort-dyn"]["rules"]}
    assert rules["max_step_latency_ms"]["passed"] is True
    assert rules["max_step_latency_ms"]["observed"] == pytest.approx(profile["step_latency_ms_p50"])
    assert rules["max_artifact_bytes"]["observed"] == artifact["bytes"]
    torch_rules = {r["rule"]: r for r in verdicts["int8"]["rules"]}
    assert torch_rules["max_step_latency_ms"]["passed"] is None  # budget set, nothing measured: inconclusive

    download = client.get(f"/jobs/{job['id']}/artifacts/ort-dyn")
    assert download.status_code == 200
    assert download.headers["x-content-sha256"] == artifact["sha256"] == hashlib.sha256(download.content).hexdigest()
    assert len(download.content) == artifact["bytes"]
    (tmp_path / "got.onnx").write_bytes(download.content)
    session = ort.InferenceSession(str(tmp_path / "got.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == artifact["input_names"]

    assert client.get(f"/jobs/{job['id']}/artifacts/int8").status_code == 404
    assert client.get(f"/jobs/{job['id']}/artifacts/nope").status_code == 404
    assert client.get("/jobs/nope/artifacts/ort-dyn").status_code == 404


def test_aihub_requested_without_reachable_hub_is_inconclusive(client: TestClient, tmp_path: Path) -> None:
    """The real client in a real worker on this offline machine: the job succeeds, the device profile
    is inconclusive with its reason, and the verdict is inconclusive (never a false go)."""
    checkpoint = make_tiny_zoo_model(tmp_path / "zoo" / "tiny", steps=2, puzzles=4, seed=1)
    policy = {"min_fidelity_mean": None, "min_fidelity_p05": None, "min_answer_agreement": None, "max_puzzle_exact_drop": None,
              "max_predicted_exact_drop": None}  # every threshold off: only the device profile can leave it undecided
    options = {"limit": 4, "aihub": {"devices": ["Samsung Galaxy S24 (Family)"], "token_ref": "env:CARRYGATE_TEST_NO_SUCH_TOKEN",
                                     "connect_timeout_seconds": 2}}
    spec = {"name": "ort-none", "onnxruntime": {"quantization": "none", "profile_repeats": 0}}
    created = client.post("/jobs", json={"checkpoint_id": register(client, checkpoint), "candidates": [spec], "policy": policy,
                                         "options": options})
    assert created.status_code == 202, created.text
    job = wait_for(client, created.json()["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    [device] = job["result"]["candidates"][0]["device_profiles"]
    assert device["status"] == "inconclusive" and device["reason"].startswith("no AI Hub token")
    assert job["verdict"]["decision"] == "inconclusive"
    bad = client.post("/jobs", json={"checkpoint_id": register(client, checkpoint), "candidates": [spec],
                                     "options": {"aihub": {"devices": ["x"], "token_ref": "my-plain-token"}}})
    assert bad.status_code == 422 and "token_ref" in bad.text
