"""The matched 6x6 pair (TRM-MLP vs TRM-attention): cards reproduce, both reason, within 0.10, small."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carrygate.models.checkpoint import load_checkpoint
from tests.conftest import ZOO
from tests.unit.test_cli import carrygate

PAIR = ("sudoku6-mlp", "sudoku6-att")


@pytest.mark.parametrize("name", PAIR)
def test_predict_reproduces_the_card_and_the_model_reasons(name: str, tmp_path: Path) -> None:
    card = json.loads((ZOO / name / "card.json").read_text())
    run = carrygate("predict", str(ZOO / name), "--data", str(ZOO / name / "data"), "--out", str(tmp_path / "p.npz"))
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["count"] == card["test"]["count"]
    assert summary["puzzle_exact"] == pytest.approx(card["test"]["puzzle_exact"], abs=1e-6)
    assert card["test"]["puzzle_exact"] >= 0.6 and card["probe"]["puzzle_exact"] >= 0.6
    assert "--seed 1" in card["probe"]["data_command"]  # the card's data command with another seed
    assert (ZOO / name / "model.safetensors").stat().st_size <= 5 * 1024 * 1024
    assert card["weights"].startswith("EMA") and card["learning_curve"]


def test_the_pair_shares_data_and_model_config_and_is_matched() -> None:
    mlp, att = (json.loads((ZOO / n / "card.json").read_text()) for n in PAIR)
    assert mlp["data_command"] == att["data_command"]
    differs = {k for k in mlp["config"] if mlp["config"][k] != att["config"][k]}
    assert differs == {"mlp_t", "pos_encodings"}  # the ablation: token mixing only
    assert abs(mlp["test"]["puzzle_exact"] - att["test"]["puzzle_exact"]) <= 0.10
    for name in PAIR:
        model = load_checkpoint(ZOO / name).model
        assert (model.L_level.layers[0].mlp_t is not None) == (name == "sudoku6-mlp")
