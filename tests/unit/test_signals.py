"""The label-free signals against a brute-force computation from saved carries and logits, the
predicted-drop model on synthetic cases whose answer is known, and the gate's interval rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from carrygate.gate import GatePolicy, judge_candidate
from carrygate.models import build_model, drop_model, signals, validity
from carrygate.models.compress import CompressionSpec, apply
from carrygate.models.drop_model import Case, DropCalibration
from carrygate.models.results import DropPrediction, EvaluationResult, ModelResult, Summary
from carrygate.models.trajectory import Candidate, run_lockstep
from carrygate.models.validity import auroc, kendall, spearman
from tests.conftest import tiny_trm
from tests.unit.test_trajectory import _batches, _perturbed


def _saved(model: torch.nn.Module, batches: list) -> list[list]:
    """Every step's output of every batch, kept whole (what the engine must not need)."""
    with torch.no_grad():
        return [list(model.steps(inputs, ids)) for inputs, ids, _ in batches]


def test_every_signal_equals_brute_force_from_saved_carries() -> None:
    ref = build_model(tiny_trm(halt_max_steps=4))
    cand = _perturbed(ref, 0.05)
    floor = _perturbed(ref, 0.001)
    batches = _batches(10, 4)
    result = run_lockstep(ref, [Candidate("c", cand), Candidate("floor", floor, role="noise_floor")], batches)
    ref_steps, cand_steps, floor_steps = _saved(ref, batches), _saved(cand, batches), _saved(floor, batches)

    def cos(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
        return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).mean(-1).numpy()

    fid = np.concatenate([cos(c[-1].carry.z_H, r[-1].carry.z_H) for c, r in zip(cand_steps, ref_steps, strict=True)])
    floor_fid = np.concatenate([cos(f[-1].carry.z_H, r[-1].carry.z_H) for f, r in zip(floor_steps, ref_steps, strict=True)])
    same = np.concatenate([(c[-1].logits.argmax(-1) == r[-1].logits.argmax(-1)).numpy()
                           for c, r in zip(cand_steps, ref_steps, strict=True)])
    kl = []
    for c, r in zip(cand_steps, ref_steps, strict=True):
        p, q = torch.softmax(r[-1].logits.double(), -1), torch.softmax(c[-1].logits.double(), -1)
        kl.append((p * (p.log() - q.log())).sum(-1).mean(-1).numpy())
    kl = np.concatenate(kl)
    ref_q = np.concatenate([r[-1].q_halt_logits.double().numpy() for r in ref_steps])
    ref_last = np.concatenate([cos(r[-1].carry.z_H, r[-2].carry.z_H) for r in ref_steps])
    cand_last = np.concatenate([cos(c[-1].carry.z_H, c[-2].carry.z_H) for c in cand_steps])
    area = np.concatenate([np.mean([1 - cos(c[t].carry.z_H, r[t].carry.z_H) for t in range(4)], axis=0)
                           for c, r in zip(cand_steps, ref_steps, strict=True)])
    settled = (ref_q > 0) & (1 - ref_last <= signals.SETTLED_MAX_CHANGE)
    tau = min(np.percentile(floor_fid, signals.TAIL_PERCENTILE), signals.TAIL_MAX_TAU)

    got = result.candidates[0]
    assert result.fidelity_tail_tau == pytest.approx(tau, abs=1e-12)
    assert [c.name for c in result.candidates] == ["c"] and result.noise_floor is not None
    assert got.fidelity.mean == pytest.approx(fid.mean(), abs=1e-12)
    assert got.cell_agreement == pytest.approx(same.mean(), abs=1e-12)
    assert got.logit_kl_mean == pytest.approx(kl.mean(), abs=1e-9)
    assert got.logit_kl_p95 == pytest.approx(np.percentile(kl, 95), abs=1e-9)
    assert got.fidelity_tail == pytest.approx((fid < tau).mean(), abs=1e-12)
    assert got.trajectory_area == pytest.approx(area.mean(), abs=1e-9)
    assert got.late_drift_excess == pytest.approx(((1 - cand_last) - (1 - ref_last)).mean(), abs=1e-9)
    answer_equal = same.all(-1)
    expected_settled = answer_equal[settled].mean() if settled.any() else None
    assert (got.settled_agreement is None) == (expected_settled is None)
    if expected_settled is not None:
        assert got.settled_agreement == pytest.approx(expected_settled)
    assert result.reference.settled_puzzles == int(settled.sum())


def test_a_harmless_candidate_has_no_tail_and_zero_kl() -> None:
    ref = build_model(tiny_trm(halt_max_steps=3))
    result = run_lockstep(ref, [Candidate("same", apply(CompressionSpec(), ref)), Candidate("floor", _perturbed(ref, 0.01),
                                                                                              role="noise_floor")], _batches(8, 4))
    same = result.candidates[0]
    assert same.logit_kl_mean == 0.0 and same.fidelity_tail == 0.0 and same.trajectory_area == pytest.approx(0.0, abs=1e-12)
    assert same.settled_agreement in (None, 1.0)


# -- the predicted drop ------------------------------------------------------------------------------
def _case(n: int, changed: int, ref_right_when_changed: float, rng: np.random.Generator, family: str = "f") -> Case:
    """A synthetic labelled case: `changed` puzzles change answer; on those the reference is right
    with the given rate and its halting logit says so (high q_halt when right)."""
    ref_exact = np.ones(n)
    answer_equal = np.ones(n)
    answer_equal[:changed] = 0
    right = rng.random(changed) < ref_right_when_changed
    ref_exact[:changed] = right
    cand_exact = ref_exact.copy()
    cand_exact[:changed] = 0
    q_ref = np.where(ref_exact > 0, 5.0, -5.0) + rng.normal(0, 0.5, n)
    reference = {"q_halt": q_ref, "consecutive_final": np.ones(n), "exact": ref_exact}
    candidate = {"answer_equal": answer_equal, "q_halt": np.full(n, -3.0), "fidelity": np.where(answer_equal > 0, 0.99, 0.9),
                 "logit_kl": np.where(answer_equal > 0, 1e-3, 0.5), "cell_agreement": np.where(answer_equal > 0, 1.0, 0.9),
                 "exact": cand_exact}
    return Case(reference, candidate, family, "m", f"{family}-{changed}")


def test_predicted_drop_recovers_a_known_answer_and_round_trips(tmp_path) -> None:
    rng = np.random.default_rng(0)
    cases = [_case(400, k, 0.7, rng, family=f"f{k % 4}") for k in range(0, 80, 5)]
    calibration = drop_model.fit(cases)
    path = tmp_path / "cal.json"
    path.write_text(calibration.model_dump_json())
    loaded = DropCalibration.model_validate_json(path.read_text())
    assert loaded == calibration and loaded.version == calibration.version
    test = _case(400, 60, 0.7, np.random.default_rng(1))
    prediction = drop_model.predict(loaded, test.reference, test.candidate)
    # the reference's q_halt separates right from wrong, so the drop is the right ones among the changed
    assert prediction.mean == pytest.approx(test.measured_drop, abs=0.01)
    assert prediction.lo <= test.measured_drop <= prediction.hi
    unchanged = _case(400, 0, 0.7, rng)
    exact_zero = drop_model.predict(loaded, unchanged.reference, unchanged.candidate)
    assert (exact_zero.mean, exact_zero.lo, exact_zero.hi) == (0.0, 0.0, 0.0)


def test_the_interval_never_leaves_the_changed_answer_bound() -> None:
    rng = np.random.default_rng(2)
    calibration = drop_model.fit([_case(400, k, 0.7, rng, family=f"f{k % 4}") for k in range(0, 80, 5)])
    wide = calibration.model_copy(update={"conformal_q": 50.0})
    few = _case(400, 4, 0.7, rng)  # 1 % of the answers changed: the drop is within +-1 pp, labels or not
    prediction = drop_model.predict(wide, few.reference, few.candidate)
    assert prediction.hi == pytest.approx(0.01) and prediction.lo == pytest.approx(-0.01)
    assert prediction.lo <= few.measured_drop <= prediction.hi


def test_leave_one_model_out_predicts_each_model_from_the_others_only() -> None:
    rng = np.random.default_rng(3)

    def model_cases(name: str, misleading: bool = False) -> list[Case]:
        cases = [_case(400, k, 0.7, rng, family=f"f{k % 3}") for k in range(5, 65, 5)]
        if misleading:  # this model's halting head says "solved" on the changed puzzles it gets wrong
            for c in cases:
                c.reference["q_halt"][:] = 5.0
        return [Case(c.reference, c.candidate, c.family, name, c.name) for c in cases]

    cases = {"a": model_cases("a"), "b": model_cases("b"), "c": model_cases("c"), "odd": model_cases("odd", misleading=True)}
    report = validity.leave_one_model_out_cases(cases)
    assert set(report) == set(cases) and report["a"].held_out_by == "model" and report["a"].n == 12
    assert report["a"].coverage >= 0.9 and report["a"].mae < 0.01  # like two of the others: covered
    # a model unlike every one the fit saw is not, and the held-out report shows it
    assert report["odd"].mae > 2 * report["a"].mae and report["odd"].coverage < 0.5


def test_tail_tau_follows_the_noise_floor_up_to_a_cap() -> None:
    spread = np.linspace(0.98, 1.0, 1001)
    assert signals.tail_tau(spread) == pytest.approx(np.percentile(spread, signals.TAIL_PERCENTILE))
    assert signals.tail_tau(np.full(100, 0.999999)) == signals.TAIL_MAX_TAU


def test_conformal_q_is_infinite_with_too_few_residuals() -> None:
    assert math.isinf(drop_model._conformal_quantile([0.1, 0.2], 0.9))
    assert drop_model._conformal_quantile([float(i) for i in range(1, 20)], 0.9) == 18.0


# -- rank statistics ---------------------------------------------------------------------------------
def test_rank_statistics_by_hand() -> None:
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 20.0, 40.0, 30.0])
    assert spearman(x, y) == pytest.approx(0.8)
    assert kendall(x, y) == pytest.approx(4 / 6)
    assert auroc(np.array([0.9, 0.8, 0.1]), np.array([True, False, False])) == 1.0
    assert auroc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5


# -- gate intervals ----------------------------------------------------------------------------------
def _result(fid: float, ci: tuple[float, float], drop: DropPrediction | None = None) -> ModelResult:
    return ModelResult(name="c", steps=2, consecutive_similarity={"curve": [None, 1.0], "mean": 1.0},
                       fidelity=Summary(mean=fid, p05=fid, ci95=ci, p05_ci95=ci), predicted_puzzle_exact_drop=drop)


REF = ModelResult(name="reference", steps=2, consecutive_similarity={"curve": [None, 1.0], "mean": 1.0})


@pytest.mark.parametrize(("ci", "decision"), [((0.991, 0.995), "go"), ((0.985, 0.989), "no_go"), ((0.988, 0.993), "inconclusive")])
def test_fidelity_rules_judge_the_bootstrap_interval(ci: tuple[float, float], decision: str) -> None:
    policy = GatePolicy(min_fidelity_mean=0.99, min_fidelity_p05=None, max_puzzle_exact_drop=None, max_predicted_exact_drop=None)
    verdict = judge_candidate(_result(0.992, ci), REF, False, policy)
    assert verdict.decision == decision
    rule = verdict.rules[-1]
    assert rule.rule == "min_fidelity_mean" and rule.interval == ci and rule.observed == 0.992


@pytest.mark.parametrize(("lo", "hi", "decision"), [(0.0, 0.015, "go"), (0.025, 0.04, "no_go"), (0.01, 0.03, "inconclusive")])
def test_predicted_drop_straddling_the_threshold_is_inconclusive_never_go(lo: float, hi: float, decision: str) -> None:
    policy = GatePolicy(min_fidelity_mean=None, min_fidelity_p05=None, max_puzzle_exact_drop=None, max_predicted_exact_drop=0.02)
    drop = DropPrediction(mean=(lo + hi) / 2, lo=lo, hi=hi, calibration="t")
    assert judge_candidate(_result(1.0, (1.0, 1.0), drop), REF, False, policy).decision == decision


def test_a_missing_prediction_is_not_a_pass() -> None:
    policy = GatePolicy(min_fidelity_mean=None, min_fidelity_p05=None, max_puzzle_exact_drop=None, max_predicted_exact_drop=0.02)
    assert judge_candidate(_result(1.0, (1.0, 1.0)), REF, False, policy).decision == "inconclusive"


def test_predict_drops_fills_every_finite_candidate() -> None:
    ref = build_model(tiny_trm(halt_max_steps=3))
    result: EvaluationResult = run_lockstep(ref, [Candidate("c", _perturbed(ref, 0.05))], _batches(8, 4))
    rng = np.random.default_rng(0)
    calibration = drop_model.fit([_case(100, k, 0.5, rng, family=f"f{k % 3}") for k in range(0, 40, 4)])
    drop_model.predict_drops(result, calibration)
    p = result.candidates[0].predicted_puzzle_exact_drop
    assert p is not None and p.lo <= p.mean <= p.hi and p.calibration == calibration.version


def test_runs_of_one_reference_pool_and_runs_of_another_are_refused() -> None:
    ref = build_model(tiny_trm(halt_max_steps=3))
    batches = _batches(12, 6)

    def run(reference: torch.nn.Module, *names: str) -> EvaluationResult:
        cands = [Candidate(n, _perturbed(reference, 0.01 * (k + 1))) for k, n in enumerate(names)]
        return run_lockstep(reference, cands, batches)

    first, later = run(ref, "a", "b"), run(ref, "b", "c")
    pooled = validity.pool_results([first, later])
    assert [c.name for c in pooled.candidates] == ["a", "b", "c"]
    assert pooled.candidates[1] == first.candidates[1]  # a name seen twice keeps its first run's values
    assert [c.name for c in first.candidates] == ["a", "b"]  # the inputs are not modified
    with pytest.raises(ValueError, match="cannot be pooled"):
        validity.pool_results([first, run(_perturbed(ref, 0.5), "d")])
