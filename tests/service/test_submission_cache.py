"""POST /jobs's per-process cache (`SubmissionCache`) never serves a stale answer for what it keeps."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from carrygate.app.main import create_app
from carrygate.app.settings import Settings
from tests.conftest import make_tiny_zoo_model

INT8 = {"name": "int8", "weights": {"method": "int8-channel"}}


@pytest.fixture
def client(sqlite_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "data", database_url=sqlite_url, lease_seconds=30, heartbeat_seconds=0.5)
    with TestClient(create_app(settings, start_workers=False, start_dispatchers=False)) as c:
        yield c


def test_the_shipped_probe_task_follows_its_files(client: TestClient, tmp_path: Path) -> None:
    folder = make_tiny_zoo_model(tmp_path / "tiny", steps=2, puzzles=4, seed=0)
    checkpoint = client.post("/checkpoints/register", json={"path": str(folder)}).json()["id"]

    def task() -> str | None:
        submitted = client.post("/jobs", json={"checkpoint_id": checkpoint, "candidates": [INT8]})
        assert submitted.status_code == 202, submitted.text
        return submitted.json()["task"]

    assert task() == task() == "sudoku"
    meta_path = folder / "data" / "test" / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"vocab_size": 99}))  # no task has this vocabulary
    stat = meta_path.stat()
    os.utime(meta_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a new mtime even on a coarse clock
    assert task() is None
    meta_path.write_text(json.dumps(meta))
    os.utime(meta_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000))
    assert task() == "sudoku"


def test_a_spec_that_does_not_fit_is_refused_every_time(client: TestClient, tmp_path: Path) -> None:
    folder = make_tiny_zoo_model(tmp_path / "tiny", steps=2, puzzles=4, seed=0)
    checkpoint = client.post("/checkpoints/register", json={"path": str(folder)}).json()["id"]
    misfit = {"name": "none", "weights": {"method": "int8-channel"}, "include": ["nothing.*"]}  # selects no Linear layer
    for _ in range(2):
        refused = client.post("/jobs", json={"checkpoint_id": checkpoint, "candidates": [INT8, misfit]})
        assert refused.status_code == 422 and "candidates[1].include/exclude" in refused.text, refused.text
        assert client.post("/jobs", json={"checkpoint_id": checkpoint, "candidates": [INT8]}).status_code == 202
    assert client.post("/jobs", json={"checkpoint_id": "missing", "candidates": [INT8]}).status_code == 404
