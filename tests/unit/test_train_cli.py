"""`carrygate train` end to end: an interrupted run resumes, and the card carries curve, probe and commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def carrygate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "carrygate.app", *args], capture_output=True, text=True, cwd=REPO, timeout=600,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_train_stops_resumes_and_writes_the_card(tmp_path: Path) -> None:
    for name, seed in (("data", "0"), ("probe", "1")):
        run = carrygate("data", "sudoku", str(tmp_path / name), "--size", "4", "--givens", "6", "--train-puzzles", "30",
                        "--num-aug", "0", "--test-puzzles", "12", "--seed", seed)
        assert run.returncode == 0, run.stderr
    out, state = tmp_path / "model", tmp_path / "run.pt"
    common = ["train", "--data", str(tmp_path / "data"), "--out", str(out), "--hidden-size", "16", "--num-heads", "2",
              "--h-cycles", "1", "--l-cycles", "1", "--l-layers", "1", "--halt-max-steps", "2", "--batch-size", "4",
              "--iterations", "6", "--ema-rate", "0.9", "--augment", "sudoku", "--eval-every", "3", "--eval-limit", "8",
              "--fp32-attention", "--probe", str(tmp_path / "probe")]
    first = carrygate(*common, "--checkpoint", str(state), "--stop-after", "4")
    assert first.returncode == 0, first.stderr
    assert state.is_file() and not (out / "card.json").exists()
    second = carrygate(*common, "--resume", str(state))
    assert second.returncode == 0, second.stderr
    card = json.loads((out / "card.json").read_text())
    assert len(card["train_commands"]) == 2 and "--resume" in card["train_commands"][1]
    assert [p["iteration"] for p in card["learning_curve"]] == [3, 6]
    assert card["probe"]["count"] == 12 and card["test"]["count"] == 12
    assert card["iterations_done"] == 6 and card["weights"].startswith("EMA")
    assert "Learning curve" in (out / "card.md").read_text()
    # Another model config than the saved one is refused.
    other = carrygate(*[a if a != "16" else "32" for a in common], "--resume", str(state))
    assert other.returncode == 2
