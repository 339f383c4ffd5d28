"""Adaptive halting (models/halting.py in the lockstep engine): each puzzle stops at its own first halting step.

The checks that matter: with no puzzle halting early, adaptive equals fixed exactly; `steps_used` and the
answers taken at the halting step equal a brute-force host loop; shards merge exactly; the gate's two
halting rules; and `halting: fixed` leaves the result as it was."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from carrygate.gate import GatePolicy, judge_candidate
from carrygate.models import build_model
from carrygate.models.compress.grids import PAPER
from carrygate.models.compress.spec import CompressionSpec
from carrygate.models.evaluate import Probe, build_candidates, evaluate
from carrygate.models.halting import Halting, wants_halt
from carrygate.models.metrics import per_puzzle_accuracy
from carrygate.models.reasoner import host_loop
from carrygate.models.results import AdaptiveHalting, EvaluationResult, StepsUsed
from carrygate.models.trajectory import finish, merge, run_lockstep, run_partial
from tests.conftest import tiny_trm

STEPS = 6
SPECS = [CompressionSpec.model_validate({"name": n, **PAPER[n]}) for n in ("int8-channel", "int4-naive", "prune-50")]


def probe(n: int = 24, seed: int = 0) -> Probe:
    rng = np.random.default_rng(seed)
    return Probe(rng.integers(1, 5, size=(n, 9)).astype(np.int32), rng.integers(0, 3, size=n).astype(np.int32),
                 rng.integers(1, 5, size=(n, 9)).astype(np.int64))


def tiny(*, halting_bias: float | None, no_act_continue: bool = True, seed: int = 0) -> Any:
    """A tiny random TRM. `halting_bias` None keeps the official init (never halts); a number gives the Q head random
    weights and that bias, so puzzles halt at different steps."""
    torch.manual_seed(seed)
    model = build_model(tiny_trm(halt_max_steps=STEPS, no_ACT_continue=no_act_continue))
    with torch.no_grad():
        if halting_bias is None:
            model.q_head.weight.zero_()
            model.q_head.bias.fill_(-1e4)  # nothing ever halts early
        else:
            # q_halt falls as the carry settles on this random model: a negated random row makes it rise, so
            # puzzles cross into halting at different steps; q_continue gets a weaker random row of its own
            model.q_head.weight.normal_(0, 1.0)
            model.q_head.weight[0].neg_()
            model.q_head.weight[1].mul_(0.3)
            model.q_head.bias.copy_(torch.tensor([halting_bias, 0.8]))
    return model.eval()


def without_adaptive(result: EvaluationResult) -> dict[str, Any]:
    body = result.model_dump(mode="json", exclude={"seconds", "halting"})
    for model in [body["reference"], *body["candidates"], *([body["noise_floor"]] if body.get("noise_floor") else [])]:
        model.pop("adaptive")
        model["per_puzzle"].pop("steps_used", None)
    return body


def test_adaptive_equals_fixed_exactly_when_no_puzzle_halts_early() -> None:
    model, puzzles = tiny(halting_bias=None), probe()
    fixed = evaluate(model, SPECS, puzzles, batch_size=8)
    adaptive = evaluate(model, SPECS, puzzles, batch_size=8, halting=Halting(mode="adaptive"))
    assert fixed.halting == "fixed" and adaptive.halting == "adaptive"
    # the fixed-depth fields of an adaptive run are the fixed run's, bit for bit
    assert without_adaptive(adaptive) == without_adaptive(fixed)
    assert all(m.adaptive is None for m in [fixed.reference, *fixed.candidates])
    for m in [adaptive.reference, *adaptive.candidates]:
        a = m.adaptive
        assert a is not None and a.rule == "q_halt > 0" and a.max_steps == STEPS
        assert a.steps_used.histogram == [0] * (STEPS - 1) + [len(puzzles)]
        assert a.steps_used.mean == a.steps_used.p95 == STEPS and a.halted_early == 0
        assert a.puzzle_exact == m.puzzle_exact and a.cell_accuracy == m.cell_accuracy
        assert a.gflops_per_puzzle == pytest.approx(m.footprint.gflops_per_puzzle)  # type: ignore[union-attr]
        if m is adaptive.reference:
            continue
        assert a.answer_agreement == m.answer_agreement and a.cell_agreement == m.cell_agreement
        assert a.fidelity_mean == m.fidelity.mean and a.fidelity_p05 == m.fidelity.p05  # type: ignore[union-attr]
        assert a.step_fidelity == m.step_fidelity
        assert a.halting_step_agreement == 1.0 and a.halts_earlier == a.halts_later == 0.0
        assert a.delta_puzzle_exact == m.delta_puzzle_exact


def brute_force(model: Any, puzzles: Probe, steps: int) -> tuple[np.ndarray, torch.Tensor]:
    """The deployed host loop, puzzle by puzzle: step until the model's own rule says halt (or `steps`), answer there."""
    outs = list(host_loop(model, torch.from_numpy(puzzles.inputs), torch.from_numpy(puzzles.puzzle_identifiers), steps))
    used, answers = [], []
    for i in range(len(puzzles)):
        for t, out in enumerate(outs):
            if t + 1 == steps or bool(wants_halt(model.config, out)[i]):
                used.append(t + 1)
                answers.append(out.logits[i].argmax(-1))
                break
    return np.asarray(used), torch.stack(answers)


@pytest.mark.parametrize("no_act_continue", [True, False], ids=["trm-q_halt>0", "q_halt>q_continue"])
def test_steps_used_and_answers_match_a_brute_force_host_loop(no_act_continue: bool) -> None:
    model, puzzles = tiny(halting_bias=1.9, no_act_continue=no_act_continue, seed=3), probe(32, seed=1)
    # one batch of all puzzles, so the engine's and the host loop's numbers come from the same matmuls
    candidates = build_candidates(model, SPECS[1:2], puzzles, batch_size=len(puzzles))
    result = run_lockstep(model, candidates, puzzles.batches(len(puzzles)), halting=Halting(mode="adaptive"))
    labels = torch.from_numpy(puzzles.labels)  # type: ignore[arg-type]
    ref_used, ref_answers = brute_force(model, puzzles, STEPS)
    cand_used, cand_answers = brute_force(candidates[0].model, puzzles, STEPS)
    assert 1 < len(set(ref_used.tolist())), "the case must halt at several different steps"
    assert (ref_used < STEPS).any() and (ref_used == STEPS).any()
    for m, used, answers in ((result.reference, ref_used, ref_answers), (result.candidates[0], cand_used, cand_answers)):
        assert m.per_puzzle["steps_used"] == used.astype(float).tolist()
        a = m.adaptive
        assert a is not None and a.steps_used.histogram == np.bincount(used, minlength=STEPS + 1)[1:].tolist()
        assert a.steps_used.mean == pytest.approx(used.mean()) and a.steps_used.p95 == pytest.approx(np.percentile(used, 95))
        _, exact, valid = per_puzzle_accuracy(answers, labels)
        assert a.puzzle_exact == pytest.approx(float(exact[valid].float().mean()))
    a = result.candidates[0].adaptive
    assert a is not None
    assert a.halting_step_agreement == pytest.approx(float((cand_used == ref_used).mean()))
    assert a.halts_earlier == pytest.approx(float((cand_used < ref_used).mean()))
    assert a.answer_agreement == pytest.approx(float((cand_answers == ref_answers).all(-1).float().mean()))


def test_adaptive_shards_merge_to_the_single_run() -> None:
    model, puzzles = tiny(halting_bias=1.9, seed=3), probe(24, seed=2)
    candidates = build_candidates(model, SPECS, puzzles, batch_size=8)
    halting = Halting(mode="adaptive")
    single = run_lockstep(model, candidates, puzzles.batches(8), halting=halting)
    parts = [run_partial(model, candidates, puzzles.batches(8, start, stop), halting=halting) for start, stop in ((0, 8), (8, 24))]
    parts = [type(p).from_json(p.to_json()) for p in parts]  # through JSON, as shards store them
    merged = finish(merge(parts), candidates)
    dump = lambda r: r.model_dump(mode="json", exclude={"seconds"})  # noqa: E731
    assert dump(merged) == dump(single)
    assert merged.reference.adaptive is not None and merged.reference.adaptive.steps_used.mean is not None


def test_max_steps_caps_every_model() -> None:
    model, puzzles = tiny(halting_bias=None), probe(8)
    result = evaluate(model, SPECS[:1], puzzles, halting=Halting(mode="adaptive", max_steps=3), with_footprint=False)
    assert result.reference.steps == 3 and result.candidates[0].adaptive.steps_used.histogram == [0, 0, 8]  # type: ignore[union-attr]
    fixed = evaluate(model, SPECS[:1], puzzles, halting=Halting(max_steps=3), with_footprint=False)
    assert len(fixed.candidates[0].step_fidelity) == 3 and fixed.reference.adaptive is None


def test_halting_option_parses_a_bare_mode() -> None:
    assert Halting.model_validate("adaptive") == Halting(mode="adaptive")
    assert Halting.model_validate({"mode": "fixed", "max_steps": 4}).steps_for(tiny_trm()) == 4
    with pytest.raises(ValueError):
        Halting.model_validate("sometimes")


# -- the gate's halting rules ---------------------------------------------------------------------
def adaptive_block(mean: float, exact: float | None) -> AdaptiveHalting:
    return AdaptiveHalting(rule="q_halt > 0", max_steps=16, steps_used=StepsUsed(mean=mean, p95=mean, max_steps=16, histogram=[]),
                           halted_early=0.5, puzzle_exact=exact)


def with_adaptive(name: str, block: AdaptiveHalting | None) -> Any:
    from tests.unit.test_gate import candidate, reference

    model = reference() if name == "reference" else candidate(name)
    model.adaptive = block
    return model


def rule(verdict: Any, name: str) -> Any:
    return next(r for r in verdict.rules if r.rule == name)


def test_halting_rules_are_off_by_default() -> None:
    assert GatePolicy().max_steps_used_increase is None and GatePolicy().max_adaptive_exact_drop is None
    ref = with_adaptive("reference", adaptive_block(6.0, 0.8))
    verdict = judge_candidate(with_adaptive("c", adaptive_block(16.0, 0.1)), ref, True, GatePolicy(min_fidelity_mean=None,
                              min_fidelity_p05=None, max_puzzle_exact_drop=None, max_predicted_exact_drop=None))
    assert [r.rule for r in verdict.rules] == ["finite"] and verdict.decision == "go"


def test_steps_used_increase_and_adaptive_exact_drop() -> None:
    policy = GatePolicy(min_fidelity_mean=None, min_fidelity_p05=None, max_puzzle_exact_drop=None, max_predicted_exact_drop=None,
                        max_steps_used_increase=1.0, max_adaptive_exact_drop=0.02)
    ref = with_adaptive("reference", adaptive_block(6.0, 0.80))
    ok = judge_candidate(with_adaptive("ok", adaptive_block(6.5, 0.79)), ref, True, policy)
    assert ok.decision == "go" and rule(ok, "max_steps_used_increase").observed == pytest.approx(0.5)
    slow = judge_candidate(with_adaptive("slow", adaptive_block(9.0, 0.80)), ref, True, policy)
    assert slow.decision == "no_go" and rule(slow, "max_steps_used_increase").passed is False
    wrong = judge_candidate(with_adaptive("wrong", adaptive_block(4.0, 0.70)), ref, True, policy)
    assert rule(wrong, "max_adaptive_exact_drop").passed is False and rule(wrong, "max_adaptive_exact_drop").observed == pytest.approx(0.1)
    assert rule(wrong, "max_steps_used_increase").passed is True  # halting earlier costs less: no increase
    fixed = judge_candidate(with_adaptive("fixed", None), with_adaptive("reference", None), True, policy)
    assert fixed.decision == "inconclusive" and "halting: adaptive" in rule(fixed, "max_steps_used_increase").reason
