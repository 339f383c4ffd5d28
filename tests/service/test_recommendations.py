"""`POST /recommendations` (issue 16): a recommend job through the API, the lease store, both executors and the webhooks.

The search itself is tested in tests/unit/test_recommend.py; here: submission checks (422 echoing the
input, register roots, compute budget, idempotency), a search run by the embedded worker on a tiny model
(progress while it runs, the result, the YAML through CompressionSpec and through `POST /jobs` with the
same verdict, `recommendation.ready` on a loopback receiver), cancellation, a non-finite reference, and
a search run by a Celery worker.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from carrygate.app.main import create_app
from carrygate.app.settings import Settings
from carrygate.models.checkpoint import load_checkpoint, save_checkpoint
from carrygate.models.compress.spec import CompressionSpec
from carrygate.models.recommend.results import Damage, Tolerance
from carrygate.models.recommend.search import badness
from carrygate.workers.recommend import non_finite_at
from tests.conftest import make_tiny_zoo_model
from tests.service.test_webhooks import SECRET, Receiver, wait_until

# What the CLI test (tests/unit/test_recommend.py) shows finds a spec on this tiny model, kept to seconds.
BUDGET = {"max_weight_fraction": 0.75}
TOLERANCE = {"min_fidelity": 0.99}
SMALL = {"limit": 12, "search_puzzles": 12, "onnxruntime": False}  # the ORT point is tested in tests/unit/test_recommend.py


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_zoo_model(tmp_path_factory.mktemp("zoo") / "tiny", steps=3, puzzles=24, seed=0)


def settings_for(database_url: str, tmp_path: Path, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, lease_seconds=30, heartbeat_seconds=0.3,
                    webhook_allow_private=True, webhook_backoff_seconds=0.3, webhook_backoff_max_seconds=1.0,
                    webhook_retry_window_seconds=300, webhook_poll_seconds=0.1, **kw)


def register(client: TestClient, path: Path) -> str:
    response = client.post("/checkpoints/register", json={"path": str(path)})
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


def body_for(checkpoint_id: str, **kw: Any) -> dict[str, Any]:
    return {"checkpoint_id": checkpoint_id, "budget": BUDGET, "tolerance": TOLERANCE, "options": SMALL, **kw}


def watch(client: TestClient, rec_id: str, timeout: float = 900) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll until finished -> (the last read, every read while it ran)."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        read = client.get(f"/recommendations/{rec_id}").json()
        if read["status"] in ("succeeded", "failed", "cancelled"):
            return read, seen
        seen.append(read)
        time.sleep(0.1)
    raise AssertionError(f"recommendation {rec_id} still {seen[-1]['status']} after {timeout} s")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"budget": {"max_weight_fraction": 0.25, "max_weight_bytes": 1000}}, "exactly one"),
        ({"budget": {}}, "at least one bound"),
        ({"budget": {"max_weight_fraction": -1}}, "max_weight_fraction"),
        ({"budget": {"max_weight_fraction": "0.25"}}, "max_weight_fraction"),
        ({"tolerance": {"max_predicted_drop": 0.02, "min_fidelity": 0.9}}, "exactly one"),
        ({"options": {"search_puzzles": 0}}, "search_puzzles"),
        ({"options": {"limit": 12, "shards": 2}}, "shards"),
        ({"candidates": []}, "candidates"),
    ],
)
def test_malformed_requests_are_422_echoing_the_input(database_url: str, tmp_path: Path, tiny_checkpoint: Path, change: dict,
                                                      field: str) -> None:
    with TestClient(create_app(settings_for(database_url, tmp_path), start_workers=False)) as client:
        body = body_for(register(client, tiny_checkpoint)) | change
        response = client.post("/recommendations", json=body)
        assert response.status_code == 422, response.text
        assert field in response.text
        sent = next(iter(change.values()))
        inputs = [e.get("input") for e in response.json()["detail"]]
        # the offending input comes back: the part sent, one of its values, or the object it sits in
        assert any(i == sent or (isinstance(sent, dict) and (i in sent.values() or (isinstance(i, dict) and sent.items() <= i.items())))
                   for i in inputs), inputs
        assert client.get("/recommendations").json()["count"] == 0


def test_submission_checks_roots_budget_idempotency_and_queued_cancel(database_url: str, tmp_path: Path, tiny_checkpoint: Path) -> None:
    import shutil

    allowed = tmp_path / "shared"
    shutil.copytree(tiny_checkpoint, allowed / "tiny")
    settings = settings_for(database_url, tmp_path, register_roots=[allowed], max_job_gflop=200.0)
    with TestClient(create_app(settings, start_workers=False)) as client:
        ckpt = register(client, allowed / "tiny")
        outside = client.post("/recommendations", json=body_for(ckpt, probe={"dataset_path": str(tiny_checkpoint / "data")}))
        assert outside.status_code == 422 and "probe.dataset_path" in outside.text and "outside the allowed folders" in outside.text
        costly = client.post("/recommendations", json=body_for(ckpt, options={"limit": 24, "search_puzzles": 24}))
        assert costly.status_code == 422 and "compute budget" in costly.text and "CARRYGATE_MAX_JOB_GFLOP" in costly.text
        assert client.post("/recommendations", json=body_for("nope")).status_code == 404

        first = client.post("/recommendations", json=body_for(ckpt, tags=["nightly"]), headers={"Idempotency-Key": "rec-1"})
        assert first.status_code == 202, first.text
        rec = first.json()
        assert first.headers["location"].endswith(f"/recommendations/{rec['id']}")
        assert rec["status"] == "queued" and rec["progress"] == {"fraction": 0.0, "stage": "queued"}
        assert rec["budget"] == BUDGET and rec["tolerance"] == TOLERANCE and rec["options"]["search_puzzles"] == 12
        again = client.post("/recommendations", json=body_for(ckpt), headers={"Idempotency-Key": "rec-1"})
        assert again.status_code == 200 and again.json()["id"] == rec["id"]
        # a key names one kind: the same key on POST /jobs is a conflict, not a recommendation read as a job
        clash = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [{"weights": {"method": "int8-channel"}}]},
                            headers={"Idempotency-Key": "rec-1"})
        assert clash.status_code == 409 and rec["id"] in clash.text
        default = client.post("/recommendations", json={"checkpoint_id": ckpt, "budget": BUDGET, "options": SMALL}).json()
        assert default["tolerance"] == {"max_predicted_drop": 0.02}

        listed = client.get("/recommendations", params={"tag": "nightly"}).json()
        assert listed["count"] == 1 and listed["data"][0]["id"] == rec["id"] and listed["data"][0]["result"] is None
        assert client.get("/recommendations").json()["count"] == 2
        assert client.get("/jobs").json()["count"] == 0  # the jobs listing holds evaluations only
        assert client.get(f"/jobs/{rec['id']}").status_code == 404

        cancelled = client.post(f"/recommendations/{rec['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert client.post(f"/recommendations/{rec['id']}/cancel").status_code == 409
        assert client.post("/recommendations/nope/cancel").status_code == 404


def test_embedded_worker_runs_a_recommendation_to_its_webhook(pg_url: str, tmp_path: Path, tiny_checkpoint: Path) -> None:
    receiver = Receiver(SECRET)
    receiver.start()
    try:
        with TestClient(create_app(settings_for(pg_url, tmp_path))) as client:
            ckpt = register(client, tiny_checkpoint)
            hook = client.post("/webhooks", json={"url": receiver.url, "secret": SECRET,
                                                  "events": ["recommendation.ready", "recommendation.failed", "job.succeeded"]})
            assert hook.status_code == 201, hook.text
            # a first search, cancelled while it runs: it stops after its current round and frees the worker
            doomed = client.post("/recommendations", json=body_for(ckpt)).json()
            rec_id = client.post("/recommendations", json=body_for(ckpt)).json()["id"]
            wait_until(lambda: client.get(f"/recommendations/{doomed['id']}").json()["status"] == "running", what="running")
            assert client.post(f"/recommendations/{doomed['id']}/cancel").status_code == 200
            stopped, _ = watch(client, doomed["id"])
            assert stopped["status"] == "cancelled" and stopped["recommended"] is None

            rec, seen = watch(client, rec_id)
            assert rec["status"] == "succeeded", rec["error"]
            running = [r for r in seen if r["status"] == "running"]
            assert running and any(0 < r["progress"]["fraction"] < 1 and r["progress"]["stage"] for r in running), running[-1:]
            fractions = [r["progress"]["fraction"] for r in running]
            assert fractions == sorted(fractions)
            assert rec["progress"]["fraction"] == 1.0 and rec["attempts"] == 1

            front = rec["front"]
            tolerance = Tolerance.model_validate(TOLERANCE)
            damage = [badness(Damage.model_validate(p["damage"]), tolerance) for p in front]
            assert front and [p["cost"]["weight_bytes"] for p in front] == sorted(p["cost"]["weight_bytes"] for p in front)
            assert damage == sorted(damage, reverse=True) and all(p["on_front"] for p in front)
            assert {c["axis"] for c in rec["sensitivity"]["cells"]} >= {"group", "step"}
            assert rec["evaluations"] > 0 and rec["result"]["evaluations"] == rec["evaluations"]

            recommended = rec["recommended"]
            assert recommended is not None, rec["notes"]
            spec = CompressionSpec.from_yaml(recommended["yaml"])
            assert spec.content_hash == CompressionSpec.model_validate(recommended["spec"]).content_hash
            assert recommended["finalist"]["cost"]["weight_fraction"] <= BUDGET["max_weight_fraction"]
            verdict = rec["verdict"]
            assert verdict["decision"] == rec["result"]["verdict"] and verdict["rules"]

            # the YAML as `carrygate gate` submits it: the same verdict on the same probe under the same policy
            job = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [spec.model_dump(mode="json", exclude_none=True)],
                                             "policy": rec["policy"], "options": {"limit": SMALL["limit"]}})
            assert job.status_code == 202, job.text
            gated = wait_until(lambda: (j := client.get(f"/jobs/{job.json()['id']}").json())["status"] in ("succeeded", "failed") and j,
                               timeout=600, what="the gate job")
            assert gated["status"] == "succeeded" and gated["candidate_verdicts"][0]["decision"] == verdict["decision"]

            # the dashboard shows the stored search; its evaluation pages and task list hold evaluations only
            page = client.get(f"/dashboard/recommendations/jobs/{rec_id}")
            assert page.status_code == 200 and recommended["name"] in page.text and 'id="front"' in page.text
            assert f"/dashboard/recommendations/jobs/{rec_id}" in client.get("/dashboard/recommendations").text
            assert f"/dashboard/recommendations/jobs/{rec_id}" in client.get("/dashboard").text  # the recent-jobs list
            assert client.get(f"/dashboard/recommendations/jobs/{gated['id']}").status_code == 404

            ready = wait_until(lambda: [e for e in receiver.events.values() if e["type"] == "recommendation.ready"], what="webhook")
            assert len(ready) == 1 and receiver.bad_signatures == 0
            event = ready[0]
            assert event["job"]["id"] == rec_id and event["job"]["kind"] == "recommend" and event["job"]["status"] == "succeeded"
            assert event["recommendation"]["chosen"] == recommended["name"]
            assert event["recommendation"]["spec_yaml"] == recommended["yaml"]
            assert event["verdict"]["decision"] == verdict["decision"]
            wait_until(lambda: len(receiver.events) >= 2, what="the gate job's webhook")
            kinds = sorted(e["type"] for e in receiver.events.values())
            assert kinds == ["job.succeeded", "recommendation.ready"]  # no job.* event for a recommendation, nothing for the cancelled one
    finally:
        receiver.stop()


def test_non_finite_reference_fails_with_the_reason_and_sends_recommendation_failed(sqlite_url: str, tmp_path: Path,
                                                                                    tiny_checkpoint: Path) -> None:
    broken = load_checkpoint(tiny_checkpoint).model
    with torch.no_grad():
        broken.L_level.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    save_checkpoint(broken, tmp_path / "broken")
    receiver = Receiver(SECRET)
    receiver.start()
    try:
        with TestClient(create_app(settings_for(sqlite_url, tmp_path))) as client:
            client.post("/webhooks", json={"url": receiver.url, "secret": SECRET, "events": ["recommendation.failed", "job.failed"]})
            ckpt = register(client, tmp_path / "broken")
            probe = {"dataset_path": str(tiny_checkpoint / "data")}
            rec, _ = watch(client, client.post("/recommendations", json=body_for(ckpt, probe=probe)).json()["id"])
            assert rec["status"] == "failed" and "non-finite" in rec["error"] and rec["recommended"] is None
            failed = wait_until(lambda: list(receiver.events.values()), what="webhook")
            assert [e["type"] for e in failed] == ["recommendation.failed"] and "non-finite" in failed[0]["job"]["error"]
    finally:
        receiver.stop()


def test_non_finite_numbers_are_found_where_they_are() -> None:
    assert non_finite_at({"a": [1.0, {"b": 2}], "c": "nan"}) is None
    assert non_finite_at({"a": [1.0, {"b": float("inf")}]}) == "a.1.b"
    assert non_finite_at([float("nan")]) == "0"


def test_celery_worker_runs_a_recommendation(tmp_path: Path, sqlite_url: str, tiny_checkpoint: Path) -> None:
    import redis

    from tests.service.test_celery import BROKER, Workers
    from tests.service.test_celery import settings_for as celery_settings

    queue = f"carrygate-test-rec-{time.monotonic_ns()}"
    settings = celery_settings(sqlite_url, tmp_path, queue)
    workers = Workers(settings, tmp_path)
    try:
        with TestClient(create_app(settings)) as client:
            workers.start("w1")
            workers.wait_ready("w1")
            rec, seen = watch(client, client.post("/recommendations", json=body_for(register(client, tiny_checkpoint))).json()["id"])
            assert rec["status"] == "succeeded", (rec["error"], workers.log("w1")[-3000:])
            assert rec["recommended"] is not None and CompressionSpec.from_yaml(rec["recommended"]["yaml"])
            assert "celery:" in workers.log("w1") or "runs job" in workers.log("w1")
    finally:
        workers.stop()
        redis.Redis.from_url(BROKER).delete(queue)
