"""Versioned calibrations: `carrygate calibrate --store` adds one, and the next job predicts with it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from carrygate.app.cli import app as cli
from carrygate.app.main import create_app
from carrygate.models.drop_model import default_calibration
from carrygate.store.sessions import make_engine, session_factory
from carrygate.workers.calibrations import stored_calibrations
from tests.service.test_api import INT8, NAIVE, register, settings_for, tiny_checkpoint  # noqa: F401 (fixture)
from tests.service.waiting import wait_for

NOISE = {"name": "noise", "noise": {"sigma": 0.3, "seed": 1}}


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(database_url, tmp_path))) as c:
        yield c


def _predictions(client: TestClient, ckpt: str) -> tuple[dict, list[str]]:
    job = wait_for(client, client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [INT8, NAIVE, NOISE]}).json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return job, [c["predicted_puzzle_exact_drop"]["calibration"] for c in job["result"]["candidates"]]


def test_a_stored_refit_is_what_the_next_job_predicts_with(client: TestClient, database_url: str, tmp_path: Path,
                                                           tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    ckpt = register(client, tiny_checkpoint)
    first, versions = _predictions(client, ckpt)
    shipped = default_calibration()
    assert shipped is not None and set(versions) == {shipped.version}  # nothing stored yet: the shipped default

    labelled = tmp_path / "labelled.json"
    labelled.write_text(json.dumps(first["result"]))
    monkeypatch.setenv("CARRYGATE_DATABASE_URL", database_url)
    monkeypatch.setenv("CARRYGATE_DATA_DIR", str(tmp_path / "data"))
    run = CliRunner().invoke(cli, ["calibrate", str(labelled), "--out", str(tmp_path / "cal.json"), "--store"])
    assert run.exit_code == 0, run.output
    fitted = json.loads((tmp_path / "cal.json").read_text())
    assert fitted["version"] != shipped.version and "stored as calibration #1" in run.output
    again = CliRunner().invoke(cli, ["calibrate", str(labelled), "--out", str(tmp_path / "cal.json"), "--store"])
    assert "stored as calibration #1" in again.output  # the same fit is one version, not two rows

    with session_factory(make_engine(database_url))() as session:
        stored = stored_calibrations(session)
    assert [s.number for s in stored] == [1] and stored[0].calibration.version == fitted["version"]
    _, versions = _predictions(client, ckpt)
    assert set(versions) == {fitted["version"]}
