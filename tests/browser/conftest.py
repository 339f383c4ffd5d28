"""Browser-test fixtures: a real carrygate server (uvicorn subprocess, embedded worker, SQLite) filled by
real small jobs on tiny zoo-layout models, and headless Chromium driven by Selenium.

Chromium and its driver are the Debian packages (`/usr/bin/chromium`, `/usr/bin/chromedriver`); `.ci/run`
installs them when missing. Without them these tests fail (they are never skipped).
Screenshots go to `tests/browser/artifacts/` (git-ignored), with the server's log.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from carrygate.models.compress.grids import PAPER, precision_depth_grid
from tests.conftest import REPO, make_tiny_zoo_model, tiny_trm

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
FAMILY = "tiny-sudoku"
SWEEP = ["int8-channel", "int4-naive", "prune-50", "bf16"]
FINISHED = ("succeeded", "failed", "cancelled")
GRID_POLICY = {"min_fidelity_mean": 0.99, "min_fidelity_p05": 0.95, "min_answer_agreement": None, "max_puzzle_exact_drop": 0.02}
ORT_CANDIDATE = {"name": "ort-dynamic-int8", "onnxruntime": {"quantization": "dynamic", "profile_repeats": 2}}
"""The one onnxruntime candidate (ONNX file, local ORT profile), in the v1 sweep: the job page's deployable-artifact section."""
ARTIFACT_BUDGETS = {"max_step_latency_ms": 1000.0, "max_artifact_bytes": 8 * 1024 * 1024}
"""The v1 sweep's policy adds the gate's latency and file-size budgets (the PyTorch candidates, which have no ORT
profile, are therefore inconclusive on the latency rule, as the gate decides for them)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DashboardServer:
    """A running server and the jobs it was filled with (ids, keyed by role)."""

    url: str
    client: httpx.Client
    checkpoints: dict[str, str] = field(default_factory=dict)
    jobs: dict[str, str] = field(default_factory=dict)
    slow_checkpoint: str = ""

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/jobs/{job_id}")
        response.raise_for_status()
        return response.json()

    def wait(self, job_id: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in FINISHED:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")
            time.sleep(0.3)

    def submit(self, checkpoint_id: str, candidates: list[dict[str, Any]], **extra: Any) -> str:
        response = self.client.post("/jobs", json={"checkpoint_id": checkpoint_id, "candidates": candidates, **extra})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])


def sweep_specs() -> list[dict[str, Any]]:
    return [{"name": name, **PAPER[name]} for name in SWEEP]


@pytest.fixture(scope="session")
def dashboard_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    """`carrygate serve` on a free loopback port with its own data dir, filled with: a 4-candidate sweep on two
    versions of one tiny model (same name: the history; on version 1 with an onnxruntime candidate as well), the
    depth x precision grid on version 1, and a job whose probe folder does not exist (it fails)."""
    root = tmp_path_factory.mktemp("dashboard")
    v1 = make_tiny_zoo_model(root / "v1", steps=3, puzzles=24, seed=0)
    v2 = make_tiny_zoo_model(root / "v2", steps=3, puzzles=24, seed=1)
    slow = make_tiny_zoo_model(root / "slow", steps=3, puzzles=160, seed=2)
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    env = {**os.environ, "CARRYGATE_DATA_DIR": str(root / "data"), "CARRYGATE_HEARTBEAT_SECONDS": "0.3", "OMP_NUM_THREADS": "1",
           "CARRYGATE_DATABASE_URL": "", "CARRYGATE_ARTIFACT_STORE": "", "CARRYGATE_API_KEYS": ""}
    log = (ARTIFACTS / "server.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "carrygate.app", "serve", "--host", "127.0.0.1", "--port", str(port)],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=30)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not become ready; see {ARTIFACTS / 'server.log'}")
            time.sleep(0.3)
        server = DashboardServer(url=url, client=client)
        for role, folder in (("v1", v1), ("v2", v2)):
            response = client.post("/checkpoints/register", json={"path": str(folder), "name": FAMILY})
            assert response.status_code in (200, 201), response.text
            server.checkpoints[role] = response.json()["id"]
        response = client.post("/checkpoints/register", json={"path": str(slow), "name": "tiny-slow"})
        server.slow_checkpoint = response.json()["id"]
        grid = [spec.to_dict() for spec in precision_depth_grid(tiny_trm(halt_max_steps=3))]
        server.jobs["sweep_v1"] = server.submit(server.checkpoints["v1"], [*sweep_specs(), ORT_CANDIDATE], options={"limit": 16},
                                                tags=["sweep"], policy=ARTIFACT_BUDGETS)
        # A lenient policy (no answer-agreement rule) so that some compressed cells of the random tiny model pass.
        server.jobs["grid_v1"] = server.submit(server.checkpoints["v1"], grid, options={"limit": 16}, tags=["grid"], policy=GRID_POLICY)
        server.jobs["sweep_v2"] = server.submit(server.checkpoints["v2"], sweep_specs(), options={"limit": 16}, tags=["sweep"])
        server.jobs["failed"] = server.submit(server.checkpoints["v2"], sweep_specs()[:1], probe={"dataset_path": str(root / "missing")})
        for job_id in server.jobs.values():
            server.wait(job_id)
        yield server
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium with a fresh profile, 1280 x 900."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: install the Debian packages chromium and chromium-driver (.ci/run does)")
    import tempfile

    profile = tempfile.mkdtemp(prefix="carrygate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic", "--no-first-run",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
