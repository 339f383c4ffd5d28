"""Crash of the whole service (API and embedded workers, kill -9 of the process group) with one job
running and others queued: after a restart every job finishes, each with exactly one verdict set."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, make_tiny_zoo_model

INT8 = {"name": "int8", "weights": {"method": "int8-channel"}}
NAIVE = {"name": "int4-naive", "weights": {"method": "int4", "granularity": "per_tensor", "symmetric": True}}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_zoo_model(tmp_path_factory.mktemp("zoo") / "tiny", steps=3, puzzles=24, seed=0)


class Service:
    """`carrygate serve` in its own process group, so kill -9 takes its worker processes down with it."""

    def __init__(self, tmp_path: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.env = os.environ | {"CARRYGATE_DATA_DIR": str(tmp_path / "data"), "CARRYGATE_LEASE_SECONDS": "3",
                                 "CARRYGATE_HEARTBEAT_SECONDS": "0.5", "CARRYGATE_EXECUTOR": "local", "OMP_NUM_THREADS": "1"}
        for name in ("CARRYGATE_DATABASE_URL", "CARRYGATE_ARTIFACT_STORE", "CARRYGATE_API_KEYS"):
            self.env.pop(name, None)
        self.logs = tmp_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        log = open(self.logs / f"serve-{self.starts}.log", "wb")  # noqa: SIM115  (closed with the process)
        self.process = subprocess.Popen([sys.executable, "-m", "carrygate.app", "serve", "--port", str(self.port)], cwd=REPO, env=self.env,
                                        stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError((self.logs / f"serve-{self.starts}.log").read_text()[-3000:])

    def crash(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    s = Service(tmp_path)
    yield s
    s.stop()


def test_restart_after_a_crash_loses_no_job(service: Service, tiny_checkpoint: Path) -> None:
    service.start()
    with httpx.Client(base_url=service.url, timeout=30) as client:
        ckpt = client.post("/checkpoints/register", json={"path": str(tiny_checkpoint)}).json()["id"]
        body = {"checkpoint_id": ckpt, "candidates": [INT8, NAIVE], "options": {"batch_size": 1}}
        ids = [client.post("/jobs", json=body).json()["id"] for _ in range(3)]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            jobs = [client.get(f"/jobs/{i}").json() for i in ids]
            if any(j["status"] == "running" and j["puzzles_done"] > 0 for j in jobs):
                break
            time.sleep(0.1)
    statuses = sorted(j["status"] for j in jobs)
    assert "running" in statuses and "queued" in statuses, statuses
    service.crash()
    service.start()
    with httpx.Client(base_url=service.url, timeout=30) as client:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            jobs = [client.get(f"/jobs/{i}").json() for i in ids]
            if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs):
                break
            time.sleep(0.3)
        assert [j["status"] for j in jobs] == ["succeeded"] * 3, [(j["status"], j["error"]) for j in jobs]
        assert max(j["attempts"] for j in jobs) == 2  # the job that was running ran again
        assert all(client.get(f"/jobs/{i}/verdict").json()["count"] == 3 for i in ids)
        verdicts: dict[str, Any] = client.get("/verdicts").json()
        assert verdicts["count"] == 3 and {v["job_id"] for v in verdicts["data"]} == set(ids)
