"""`carrygate gate` exit codes (0 go, 1 no_go, 2 inconclusive/error) against a live server and --local."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, make_tiny_zoo_model

# Fidelity-only policies: the default's predicted-drop rule is switched off so that the fidelity floor alone decides.
ONLY_FIDELITY = "min_fidelity_p05: null\nmin_answer_agreement: null\nmax_puzzle_exact_drop: null\nmax_predicted_exact_drop: null\n"
POLICIES = {
    "go": "min_fidelity_mean: 0.5\n" + ONLY_FIDELITY,
    "no_go": "min_fidelity_mean: 1.0\n" + ONLY_FIDELITY,
    # a latency budget with nothing profiled cannot be decided
    "inconclusive": "min_fidelity_mean: 0.5\n" + ONLY_FIDELITY + "max_step_latency_ms: 5\n",
}
EXPECTED = {"go": 0, "no_go": 1, "inconclusive": 2}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_zoo_model(tmp_path_factory.mktemp("gate") / "tiny", steps=2, puzzles=8, seed=1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"CARRYGATE_DATA_DIR": str(tmp_path_factory.mktemp("server")), "CARRYGATE_HEARTBEAT_SECONDS": "0.5"}
    process = subprocess.Popen([sys.executable, "-m", "carrygate.app", "serve", "--port", str(port)], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        process.kill()
        raise AssertionError("server did not become ready")
    yield url
    process.terminate()
    process.wait(30)


def gate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "carrygate.app", "gate", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("decision", ["go", "no_go", "inconclusive"])
@pytest.mark.parametrize("mode", ["server", "local"])
def test_gate_exit_codes(decision: str, mode: str, checkpoint: Path, server: str, tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICIES[decision])
    target = ["--server", server] if mode == "server" else ["--local"]
    run = gate(*target, "--checkpoint", str(checkpoint), "--spec", str(REPO / "examples/specs/int8-channel.yaml"),
               "--policy", str(tmp_path / "policy.yaml"), "--timeout", "240")
    assert run.returncode == EXPECTED[decision], run.stdout + run.stderr
    assert "int8-channel" in run.stdout and "min_fidelity_mean" in run.stdout


def test_gate_error_is_exit_2(tmp_path: Path, server: str) -> None:
    (tmp_path / "bad.yaml").write_text("weights: {method: int5}\n")
    run = gate("--server", server, "--checkpoint", str(tmp_path), "--spec", str(tmp_path / "bad.yaml"))
    assert run.returncode == 2 and "int5" in " ".join((run.stderr + run.stdout).split())
    run = gate("--local", "--checkpoint", str(tmp_path / "missing"), "--spec", str(REPO / "examples/specs/bf16.yaml"))
    assert run.returncode == 2
