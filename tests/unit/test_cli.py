"""`carrygate predict` / `evaluate` end to end through the real console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from carrygate.models.checkpoint import load_checkpoint
from carrygate.models.tasks.dataset import IGNORE_LABEL_ID, read_split
from tests.conftest import REPO, ZOO

# every shipped model: a new zoo folder is covered without editing this list
ZOO_NAMES = sorted(p.parent.name for p in ZOO.glob("*/card.json"))


def carrygate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "carrygate.app", *args], capture_output=True, text=True, cwd=REPO, timeout=600)


PREFIX = 200
"""Puzzles `predict` re-runs per model; the card's per-puzzle record covers the rest of the split."""


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_predict_reproduces_the_zoo_card(name: str, tmp_path: Path) -> None:
    """The card's numbers are its per-puzzle record's, and `predict` reproduces that record puzzle by puzzle
    on the first PREFIX puzzles (all 1,000 took 11 min of CI for the 8 models; scripts/record_zoo_cards.py
    wrote each record only after re-running the whole split to the card's numbers)."""
    card = json.loads((ZOO / name / "card.json").read_text())
    record = np.asarray(card["test"]["cells_correct"])
    labels = np.asarray(read_split(ZOO / name / "data", "test").labels)
    scored = (labels != IGNORE_LABEL_ID).sum(-1)
    assert len(record) == card["test"]["count"] == len(labels)
    assert (record == scored).mean() == pytest.approx(card["test"]["puzzle_exact"], abs=1e-6)
    assert (record / scored).mean() == pytest.approx(card["test"]["cell_accuracy"], abs=1e-5)

    run = carrygate("predict", str(ZOO / name), "--data", str(ZOO / name / "data"), "--limit", str(PREFIX),
                    "--out", str(tmp_path / "p.npz"), "--batch-size", "200")
    assert run.returncode == 0, run.stderr
    preds = np.load(tmp_path / "p.npz")["preds"]
    right = ((preds == labels[:PREFIX]) & (labels[:PREFIX] != IGNORE_LABEL_ID)).sum(-1)
    assert right.tolist() == record[:PREFIX].tolist()


def test_predict_inputs_save_carry_layout(tmp_path: Path) -> None:
    folder = ZOO / "sudoku-att"
    inputs = np.load(folder / "data" / "test" / "all__inputs.npy")[:5].astype(np.int64)
    np.save(tmp_path / "x.npy", inputs)
    np.save(tmp_path / "ids.npy", np.zeros(5, np.int32))
    run = carrygate("predict", str(folder), "--inputs", str(tmp_path / "x.npy"), "--puzzle-ids", str(tmp_path / "ids.npy"),
                    "--steps", "3", "--save-carry", "--out", str(tmp_path / "o.npz"))
    assert run.returncode == 0, run.stderr
    out = np.load(tmp_path / "o.npz")
    ckpt = load_checkpoint(folder)
    T, D, V = ckpt.config.total_len, ckpt.config.hidden_size, ckpt.config.vocab_size
    assert out["preds"].shape == (5, 81) and out["logits"].shape == (5, 81, V) and out["logits"].dtype == np.float32
    assert out["q_halt_logits"].shape == (3, 5)
    assert out["z_H"].shape == (3, 5, T, D) and out["z_L"].dtype == np.float32
    with torch.inference_mode():
        steps = list(ckpt.model.steps(torch.from_numpy(inputs), torch.zeros(5, dtype=torch.long), 3))
    assert np.array_equal(out["z_H"][1], steps[1].carry.z_H.float().numpy())
    assert np.array_equal(out["preds"], steps[-1].logits.argmax(-1).numpy())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--inputs", "WIDE"], "seq_len"),
        (["--data", "nowhere"], "no dataset.json"),
        ([], "exactly one of"),
    ],
)
def test_predict_bad_input_exits_nonzero_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    np.save(tmp_path / "wide.npy", np.ones((2, 90), np.int64))
    args = [str(tmp_path / "wide.npy") if a == "WIDE" else (str(tmp_path / a) if a == "nowhere" else a) for a in args]
    run = carrygate("predict", str(ZOO / "sudoku-mlp"), *args, "--out", str(tmp_path / "o.npz"))
    assert run.returncode != 0
    assert message in " ".join(run.stderr.split())  # rich wraps to the terminal width
    assert not (tmp_path / "o.npz").exists()


def test_predict_missing_checkpoint(tmp_path: Path) -> None:
    run = carrygate("predict", str(tmp_path / "none"), "--inputs", "x.npy", "--out", str(tmp_path / "o.npz"))
    assert run.returncode != 0


def test_evaluate_writes_the_documented_schema(tmp_path: Path) -> None:
    specs = REPO / "examples" / "specs"
    run = carrygate("evaluate", str(ZOO / "sudoku-mlp"), "--spec", str(specs / "int8-channel.yaml"),
                    "--spec", str(specs / "int4-naive.yaml"), "--limit", "16", "--json", str(tmp_path / "r.json"))
    assert run.returncode == 0, run.stderr
    assert "int4-naive" in run.stdout and "fidelity" in run.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["puzzles"] == 16 and result["labels"] is True
    steps = result["reference"]["steps"]
    for cand in result["candidates"]:
        assert {"name", "spec", "fidelity", "step_fidelity", "consecutive_similarity", "answer_agreement", "cell_accuracy",
                "puzzle_exact", "non_finite", "footprint"} <= set(cand)
        assert set(cand["fidelity"]) >= {"mean", "p05", "min"}
        assert len(cand["step_fidelity"]) == steps
    assert result["candidates"][0]["spec"]["weights"]["method"] == "int8-channel"


def test_evaluate_bad_spec_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("weights: {method: int4, granularity: group}\n")
    run = carrygate("evaluate", str(ZOO / "sudoku-mlp"), "--spec", str(tmp_path / "bad.yaml"), "--limit", "4")
    assert run.returncode == 2 and "group_size" in run.stderr
