"""The matched 6x6 pair (TRM-MLP vs TRM-attention): both reason, within 0.10, small."""

from __future__ import annotations

import json

import pytest

from carrygate.models.checkpoint import load_checkpoint
from tests.conftest import ZOO

PAIR = ("sudoku6-mlp", "sudoku6-att")


@pytest.mark.parametrize("name", PAIR)
def test_the_model_reasons_on_both_splits_and_ships_small(name: str) -> None:
    # `carrygate predict` reproducing the card is test_cli.py's test_predict_reproduces_the_zoo_card
    card = json.loads((ZOO / name / "card.json").read_text())
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
