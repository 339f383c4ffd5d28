"""Science claims, asserted on the shipped zoo models (real trained checkpoints, held-out puzzles)."""

from __future__ import annotations

import pytest

from carrygate.models.cards import read_card, reasons
from carrygate.models.checkpoint import load_checkpoint
from carrygate.models.compress import CompressionSpec
from carrygate.models.compress.grids import PAPER
from carrygate.models.evaluate import Probe, evaluate
from carrygate.models.tasks.dataset import read_split
from tests.conftest import ZOO

# The models that reason: on an undertrained one the carry sits near a fixed point, so "near-lossless" is vacuous.
ZOO_NAMES = sorted(p.name for p in ZOO.iterdir() if reasons(read_card(p)))
INT8_WEIGHTS = ["int8-channel", "int8-bnb"]


def _run(name: str, spec_names: list[str], puzzles: int) -> dict[str, object]:
    ckpt = load_checkpoint(ZOO / name)
    probe = Probe.from_split(read_split(ZOO / name / "data", "test"), puzzles)
    specs = [CompressionSpec.model_validate({"name": s, **PAPER[s]}) for s in spec_names]
    result = evaluate(ckpt.model, specs, probe, with_footprint=False)
    return {c.name: c for c in result.candidates} | {"reference": result.reference}


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_fp32_against_itself_is_exactly_one_and_int8_weights_are_near_lossless(name: str) -> None:
    by_name = _run(name, ["fp32", *INT8_WEIGHTS], 48)
    same = by_name["fp32"]
    assert same.fidelity.mean == 1.0 and same.fidelity.min == 1.0
    assert same.answer_agreement == 1.0 and all(f == 1.0 for f in same.step_fidelity)
    for method in INT8_WEIGHTS:
        assert by_name[method].fidelity.mean >= 0.99, (method, by_name[method].fidelity)


def test_dynamic_int8_breaks_the_mlp_mixer_and_fidelity_sees_it_before_cell_accuracy() -> None:
    """Per-tensor activation quantisation (PyTorch dynamic INT8) collapses sudoku-mlp's reasoning:
    puzzle-exact falls far more than cell accuracy, and label-free fidelity falls with it."""
    by_name = _run("sudoku-mlp", ["int8-channel", "int8-dynamic"], 48)
    reference, weight_only, dynamic = by_name["reference"], by_name["int8-channel"], by_name["int8-dynamic"]
    assert dynamic.fidelity.mean < weight_only.fidelity.mean - 0.05
    exact_drop = reference.puzzle_exact - dynamic.puzzle_exact
    cell_drop = reference.cell_accuracy - dynamic.cell_accuracy
    assert exact_drop > 0.15 and exact_drop > 2 * cell_drop
