"""Which zoo models reason: the bar in `models/cards.py`, and the demo's selection by it."""

from __future__ import annotations

import json
from pathlib import Path

from carrygate.app.cli.demo import zoo_models
from carrygate.models.cards import REASONING_PUZZLE_EXACT, read_card, reasons
from tests.conftest import ZOO


def _card(test: float, probe: float | None) -> dict:
    card = {"test": {"count": 1000, "puzzle_exact": test}}
    if probe is not None:
        card["probe"] = {"count": 1000, "puzzle_exact": probe}
    return card


def test_reasons_needs_both_splits_at_the_bar() -> None:
    bar = REASONING_PUZZLE_EXACT
    assert reasons(_card(bar, bar))
    assert not reasons(_card(bar, bar - 0.001))
    assert not reasons(_card(bar - 0.001, 0.99))
    assert not reasons(_card(0.99, None))  # one split alone does not qualify
    assert not reasons(None)


def test_read_card_of_a_folder_without_one(tmp_path: Path) -> None:
    assert read_card(tmp_path) is None
    (tmp_path / "card.json").write_text(json.dumps(_card(0.7, 0.7)))
    assert reasons(read_card(tmp_path))


def test_the_demo_runs_exactly_the_reasoning_zoo_models() -> None:
    every = zoo_models(reasoning_only=False)
    assert {p.name for p in every} == {p.parent.name for p in ZOO.glob("*/model.safetensors")}
    chosen = {p.name for p in zoo_models()}
    for folder in every:
        card = json.loads((folder / "card.json").read_text())
        scores = [card["test"]["puzzle_exact"], *([card["probe"]["puzzle_exact"]] if "probe" in card else [])]
        assert (folder.name in chosen) == ("probe" in card and min(scores) >= REASONING_PUZZLE_EXACT), folder.name
    assert chosen, "the demo needs at least one zoo model that reasons"
