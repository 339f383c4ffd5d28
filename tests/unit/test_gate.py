"""The gate policy: rule outcomes, candidate decisions, job aggregation, policy validation and YAML."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from carrygate.gate import CandidateVerdict, GatePolicy, JobVerdict, judge, judge_candidate
from carrygate.models.results import Curve, DropPrediction, EvaluationResult, Footprint, ModelResult, NonFinite, Summary
from tests.policies import FIDELITY_FLOORS

FULL_POLICY = GatePolicy(
    min_fidelity_mean=0.99, min_fidelity_p05=0.95, min_answer_agreement=0.95, max_puzzle_exact_drop=0.02,
    max_cell_accuracy_drop=0.01, sram_budget_bytes=4 * 2**20, max_step_latency_ms=25.0, max_artifact_bytes=8 * 2**20,
    max_predicted_exact_drop=0.02,
)
PROFILE = {"step_latency_ms_p50": 18.4, "step_latency_ms_p95": 21.0}


def footprint(**overrides: Any) -> Footprint:
    fields: dict[str, Any] = {
        "backbone_bytes": 1_812_480, "embedding_table_bytes": 512, "total_bytes": 1_812_992, "carry_bytes_per_puzzle": 169_984,
        "sram_streaming_bytes": 2_150_400, "sram_full_load_bytes": 3_962_880, "fits_8mb": True, "fits_4mb": True,
        "gflops_per_step": 25.6, "gflops_per_puzzle": 409.6, "artifact_bytes": 1_905_000,
    }
    fields.update(overrides)
    return Footprint(**fields)


def reference() -> ModelResult:
    return ModelResult(
        name="reference", steps=16, consecutive_similarity=Curve(curve=[None, 0.91, 0.97, 0.995], mean=0.958),
        fidelity=Summary(mean=1.0, p05=1.0, min=1.0), answer_agreement=1.0, cell_accuracy=0.874, puzzle_exact=0.871,
        footprint=footprint(backbone_bytes=7_249_920, total_bytes=7_250_432, sram_streaming_bytes=7_587_840, fits_4mb=False),
    )


def candidate(name: str = "int8-channel", **overrides: Any) -> ModelResult:
    fields: dict[str, Any] = {
        "name": name, "spec_hash": "ab12" * 16, "steps": 16,
        "consecutive_similarity": Curve(curve=[None, 0.90, 0.97, 0.994], mean=0.955),
        "fidelity": Summary(mean=0.9962, p05=0.9871, min=0.9544), "answer_agreement": 0.984,
        "cell_accuracy": 0.871, "puzzle_exact": 0.862, "footprint": footprint(),
    }
    fields.update(overrides)
    return ModelResult(**fields)


def predicted(lo: float, hi: float) -> DropPrediction:
    return DropPrediction(mean=(lo + hi) / 2, lo=lo, hi=hi, calibration="test")


SAFE_DROP = predicted(0.0, 0.01)  # the whole 90% interval below the default 0.02


def job(*candidates: ModelResult, labels: bool = True) -> EvaluationResult:
    return EvaluationResult(puzzles=512, labels=labels, reference=reference(), candidates=list(candidates), seconds=41.7)


def rule(verdict: CandidateVerdict, name: str) -> Any:
    matches = [r for r in verdict.rules if r.rule == name]
    assert len(matches) == 1, f"{name} listed {len(matches)} times in {[r.rule for r in verdict.rules]}"
    return matches[0]


def test_go_when_every_rule_passes_and_each_is_recorded() -> None:
    verdict = judge_candidate(candidate(), reference(), True, FULL_POLICY, PROFILE)
    assert verdict.decision == "go"
    assert verdict.candidate == "int8-channel" and verdict.spec_hash == "ab12" * 16
    # labels were evaluated: the measured puzzle_exact drop supersedes max_predicted_exact_drop
    assert [r.rule for r in verdict.rules] == [
        "finite", "min_fidelity_mean", "min_fidelity_p05", "min_answer_agreement", "max_puzzle_exact_drop",
        "max_cell_accuracy_drop", "sram_budget_bytes", "max_artifact_bytes", "max_step_latency_ms",
    ]
    assert all(r.passed is True for r in verdict.rules)
    assert all(r.observed is not None and r.threshold is not None for r in verdict.rules if r.rule != "finite")
    assert rule(verdict, "min_fidelity_mean").observed == pytest.approx(0.9962)
    assert rule(verdict, "max_puzzle_exact_drop").observed == pytest.approx(0.871 - 0.862)
    assert rule(verdict, "max_cell_accuracy_drop").observed == pytest.approx(0.874 - 0.871)
    assert rule(verdict, "max_artifact_bytes").observed == 1_905_000


def test_fidelity_below_threshold_is_no_go_with_the_observed_value() -> None:
    naive_int4 = candidate("int4-per-tensor", fidelity=Summary(mean=0.35, p05=0.12, min=0.03))
    verdict = judge_candidate(naive_int4, reference(), True, FULL_POLICY)
    assert verdict.decision == "no_go"
    mean = rule(verdict, "min_fidelity_mean")
    assert mean.passed is False and mean.observed == pytest.approx(0.35) and mean.threshold == pytest.approx(0.99)
    assert "0.35 < 0.99" in mean.reason
    assert rule(verdict, "min_fidelity_p05").passed is False
    assert rule(verdict, "min_answer_agreement").passed is True


def test_non_finite_candidate_is_no_go_on_the_finite_rule() -> None:
    nan = candidate("fp16", non_finite=NonFinite(step=7, tensor="z_H", puzzles=3), fidelity=None, answer_agreement=None)
    verdict = judge_candidate(nan, reference(), True, FULL_POLICY, PROFILE)
    assert verdict.decision == "no_go"
    assert [r.rule for r in verdict.rules] == ["finite"]
    finite = verdict.rules[0]
    assert finite.passed is False and finite.observed == 7
    assert "z_H" in finite.reason and "step 7" in finite.reason


def test_missing_fidelity_is_inconclusive() -> None:
    verdict = judge_candidate(candidate(fidelity=None), reference(), True, FIDELITY_FLOORS)
    assert verdict.decision == "inconclusive"
    assert rule(verdict, "min_fidelity_mean").passed is None
    assert rule(verdict, "min_fidelity_mean").observed is None
    assert "missing" in rule(verdict, "min_fidelity_mean").reason


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_observation_is_inconclusive(bad: float) -> None:
    verdict = judge_candidate(candidate(answer_agreement=bad), reference(), True, FULL_POLICY)
    assert verdict.decision == "inconclusive"
    agreement = rule(verdict, "min_answer_agreement")
    assert agreement.passed is None and agreement.observed is None
    assert "not a finite number" in agreement.reason


def test_labels_absent_with_require_labels_is_inconclusive() -> None:
    unlabelled = candidate(cell_accuracy=None, puzzle_exact=None)
    verdict = judge_candidate(unlabelled, reference(), False, GatePolicy(require_labels=True))
    assert verdict.decision == "inconclusive"
    drop = rule(verdict, "max_puzzle_exact_drop")
    assert drop.passed is None and "labels" in drop.reason


def test_labels_absent_without_require_labels_skips_the_drop_rules() -> None:
    unlabelled = candidate(cell_accuracy=None, puzzle_exact=None, predicted_puzzle_exact_drop=SAFE_DROP)
    verdict = judge_candidate(unlabelled, reference(), False, FULL_POLICY, PROFILE)
    assert verdict.decision == "go"
    names = {r.rule for r in verdict.rules}
    assert "max_puzzle_exact_drop" not in names and "max_cell_accuracy_drop" not in names
    # without labels the prediction is what judges the accuracy loss
    assert rule(verdict, "max_predicted_exact_drop").passed is True


def test_require_labels_without_label_rules_still_blocks() -> None:
    policy = GatePolicy(max_puzzle_exact_drop=None, require_labels=True)
    predicted_safe = candidate(predicted_puzzle_exact_drop=SAFE_DROP)
    verdict = judge_candidate(predicted_safe, reference(), False, policy)
    assert verdict.decision == "inconclusive"
    assert rule(verdict, "require_labels").passed is None
    assert rule(verdict, "max_predicted_exact_drop").passed is True  # only the missing labels block
    assert judge_candidate(predicted_safe, reference(), True, policy).decision == "go"


def test_puzzle_exact_collapse_is_no_go_even_when_cell_accuracy_survives() -> None:
    collapsed = candidate("int4-calibrated", cell_accuracy=0.861, puzzle_exact=0.604)
    verdict = judge_candidate(collapsed, reference(), True, FULL_POLICY.model_copy(update={"max_cell_accuracy_drop": 0.02}), PROFILE)
    assert verdict.decision == "no_go"
    drop = rule(verdict, "max_puzzle_exact_drop")
    assert drop.passed is False and drop.observed == pytest.approx(0.871 - 0.604)
    assert rule(verdict, "max_cell_accuracy_drop").passed is True


def test_failed_rule_wins_over_missing_measurement() -> None:
    broken = candidate(fidelity=None, answer_agreement=0.62)
    verdict = judge_candidate(broken, reference(), True, FULL_POLICY)
    assert rule(verdict, "min_fidelity_mean").passed is None
    assert rule(verdict, "min_answer_agreement").passed is False
    assert verdict.decision == "no_go"


def test_sram_budget_reads_streaming_bytes() -> None:
    # streaming 2.05 MiB fits a 3 MiB budget although the full-load figure (3.78 MiB) would not.
    policy = GatePolicy(sram_budget_bytes=3 * 2**20)
    fits = judge_candidate(candidate(), reference(), True, policy)
    assert fits.decision == "go" and rule(fits, "sram_budget_bytes").observed == 2_150_400
    big = candidate(footprint=footprint(sram_streaming_bytes=3_500_000, sram_full_load_bytes=2_000_000))
    over = judge_candidate(big, reference(), True, policy)
    assert over.decision == "no_go" and rule(over, "sram_budget_bytes").observed == 3_500_000
    assert judge_candidate(candidate(footprint=None), reference(), True, policy).decision == "inconclusive"


def test_artifact_rule_without_artifact_size_is_inconclusive() -> None:
    policy = GatePolicy(max_artifact_bytes=2**20)
    assert judge_candidate(candidate(), reference(), True, policy).decision == "no_go"
    verdict = judge_candidate(candidate(footprint=footprint(artifact_bytes=None)), reference(), True, policy)
    assert verdict.decision == "inconclusive" and rule(verdict, "max_artifact_bytes").passed is None


def test_latency_rule_with_and_without_profile() -> None:
    policy = GatePolicy(max_step_latency_ms=20.0)
    fast = judge_candidate(candidate(), reference(), True, policy, {"step_latency_ms_p50": 12.5})
    assert fast.decision == "go" and rule(fast, "max_step_latency_ms").observed == pytest.approx(12.5)
    slow = judge_candidate(candidate(), reference(), True, policy, {"step_latency_ms_p50": 31.2})
    assert slow.decision == "no_go" and rule(slow, "max_step_latency_ms").passed is False
    unprofiled = judge_candidate(candidate(), reference(), True, policy, None)
    assert unprofiled.decision == "inconclusive"
    assert rule(unprofiled, "max_step_latency_ms").passed is None and "no profile" in rule(unprofiled, "max_step_latency_ms").reason
    no_key = judge_candidate(candidate(), reference(), True, policy, {"step_latency_ms_p95": 15.0})
    assert no_key.decision == "inconclusive"
    # Without the threshold the profile is not consulted at all.
    assert "max_step_latency_ms" not in {r.rule for r in judge_candidate(candidate(), reference(), True, GatePolicy()).rules}


def test_non_finite_reference_is_a_no_go() -> None:
    result = job(candidate(), candidate("nan", non_finite=NonFinite(step=2, tensor="logits", puzzles=1)))
    result.reference.non_finite = NonFinite(step=5, tensor="z_L", puzzles=4)
    verdict = judge(result, GatePolicy())
    assert [c.decision for c in verdict.candidates] == ["no_go", "no_go"] and verdict.decision == "no_go"
    reference_rule = rule(verdict.candidates[0], "reference_finite")
    assert reference_rule.passed is False and "reference z_L went non-finite at step 5" in reference_rule.reason


def test_job_aggregation_over_mixed_candidates() -> None:
    # Unlabelled, under the default policy: the predicted drop decides each candidate.
    good = candidate("int8-channel", predicted_puzzle_exact_drop=SAFE_DROP)
    unsure = candidate("bf16", predicted_puzzle_exact_drop=predicted(0.01, 0.03))  # straddles 0.02
    bad = candidate("int4-per-tensor", fidelity=Summary(mean=0.35, p05=0.12, min=0.03), predicted_puzzle_exact_drop=predicted(0.3, 0.6))

    all_good = judge(job(good, candidate("int8-bnb", predicted_puzzle_exact_drop=SAFE_DROP), labels=False), GatePolicy())
    assert all_good.decision == "go" and len(all_good.candidates) == 2

    mixed = judge(job(good, unsure, labels=False), GatePolicy())
    assert mixed.decision == "inconclusive"
    assert len(mixed.reasons) == 1 and "bf16" in mixed.reasons[0] and "max_predicted_exact_drop" in mixed.reasons[0]

    failing = judge(job(good, unsure, bad, labels=False), GatePolicy())
    assert failing.decision == "no_go"
    assert [c.decision for c in failing.candidates] == ["go", "inconclusive", "no_go"]
    assert any("int4-per-tensor" in r and "max_predicted_exact_drop" in r for r in failing.reasons)
    assert not any("int8-channel" in r for r in failing.reasons)

    # The same aggregation on the fidelity floors, where the fidelity measurements decide.
    floors = judge(job(good, candidate("bf16", fidelity=None), bad), FIDELITY_FLOORS)
    assert [c.decision for c in floors.candidates] == ["go", "inconclusive", "no_go"] and floors.decision == "no_go"
    assert any("bf16" in r and "min_fidelity_mean" in r for r in floors.reasons)
    assert any("int4-per-tensor" in r and "min_fidelity_mean" in r for r in floors.reasons)


def test_job_passes_profiles_by_candidate_name() -> None:
    policy = GatePolicy(max_step_latency_ms=20.0)
    result = job(candidate("a"), candidate("b"))
    verdict = judge(result, policy, {"a": {"step_latency_ms_p50": 10.0}, "b": {"step_latency_ms_p50": 40.0}})
    assert [c.decision for c in verdict.candidates] == ["go", "no_go"]
    assert judge(result, policy).decision == "inconclusive"


def test_empty_job_is_inconclusive() -> None:
    verdict = judge(job(), GatePolicy())
    assert verdict.decision == "inconclusive" and verdict.candidates == [] and verdict.reasons


def test_all_none_policy_still_checks_finiteness() -> None:
    open_policy = GatePolicy(min_fidelity_mean=None, min_fidelity_p05=None, min_answer_agreement=None, max_puzzle_exact_drop=None,
                             max_predicted_exact_drop=None)
    verdict = judge_candidate(candidate(fidelity=None, answer_agreement=None), reference(), False, open_policy)
    assert verdict.decision == "go" and [r.rule for r in verdict.rules] == ["finite"]
    nan = candidate(non_finite=NonFinite(step=0, tensor="z_L", puzzles=512))
    assert judge_candidate(nan, reference(), False, open_policy).decision == "no_go"


def test_verdict_snapshots_the_policy_and_serialises() -> None:
    verdict = judge(job(candidate()), FULL_POLICY, {"int8-channel": PROFILE})
    assert verdict.policy == FULL_POLICY
    assert JobVerdict.model_validate_json(verdict.model_dump_json()) == verdict


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_fidelity_mean", 1.5), ("min_fidelity_p05", -1.2), ("min_answer_agreement", -0.1),
        ("min_answer_agreement", 1.01), ("max_puzzle_exact_drop", -0.01), ("max_cell_accuracy_drop", -0.5),
        ("sram_budget_bytes", 0), ("max_artifact_bytes", -1), ("max_step_latency_ms", 0.0),
        ("min_fidelity_mean", math.nan),
    ],
)
def test_policy_validation_names_the_field(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as info:
        GatePolicy.model_validate({field: value})
    assert field in str(info.value)
    assert [e["loc"] for e in info.value.errors()] == [(field,)]


def test_policy_rejects_unknown_keys_and_is_frozen() -> None:
    with pytest.raises(ValidationError, match="min_fidelity"):
        GatePolicy.model_validate({"min_fidelity": 0.9})
    with pytest.raises(ValidationError):
        GatePolicy().min_fidelity_mean = 0.5  # type: ignore[misc]


def test_policy_yaml_round_trip() -> None:
    assert GatePolicy.from_yaml(FULL_POLICY.to_yaml()) == FULL_POLICY
    text = "min_fidelity_mean: 0.98\nmin_fidelity_p05: null\nsram_budget_bytes: 4194304\nrequire_labels: true\n"
    policy = GatePolicy.from_yaml(text)
    assert policy.min_fidelity_mean == 0.98 and policy.min_fidelity_p05 is None
    assert policy.sram_budget_bytes == 4_194_304 and policy.require_labels is True
    assert policy.min_answer_agreement is None and policy.max_puzzle_exact_drop == 0.02  # defaults fill the rest
    assert policy.max_predicted_exact_drop == 0.02
    assert GatePolicy().min_fidelity_mean is None and GatePolicy().min_fidelity_p05 is None
    assert GatePolicy.from_yaml(policy.to_yaml()) == policy
    assert GatePolicy.from_yaml("") == GatePolicy()
    with pytest.raises(ValueError, match="mapping"):
        GatePolicy.from_yaml("- 0.99\n")


def test_thresholds_are_inclusive() -> None:
    at_edge = candidate(fidelity=Summary(mean=0.99, p05=0.95, min=0.91), answer_agreement=0.95,
                        footprint=footprint(sram_streaming_bytes=2**21, artifact_bytes=2**21),
                        predicted_puzzle_exact_drop=predicted(0.0, 0.02))
    policy = GatePolicy(min_fidelity_mean=0.99, min_fidelity_p05=0.95, min_answer_agreement=0.95, max_predicted_exact_drop=0.02,
                        sram_budget_bytes=2**21, max_artifact_bytes=2**21, max_step_latency_ms=20.0)
    for labels in (True, False):  # without labels the predicted drop's upper end sits on its threshold
        verdict = judge_candidate(at_edge, reference(), labels, policy, {"step_latency_ms_p50": 20.0})
        assert verdict.decision == "go", [r.reason for r in verdict.rules]
        assert {"min_fidelity_mean", "min_fidelity_p05", "min_answer_agreement", "sram_budget_bytes", "max_artifact_bytes",
                "max_step_latency_ms"} <= {r.rule for r in verdict.rules}
    assert rule(verdict, "max_predicted_exact_drop").passed is True


# -- the default label-free rule: the predicted drop (docs/validity.md) ---------------------------

def test_default_policy_without_labels_judges_the_predicted_drop_and_no_fidelity() -> None:
    unlabelled = candidate(cell_accuracy=None, puzzle_exact=None, predicted_puzzle_exact_drop=SAFE_DROP)
    verdict = judge_candidate(unlabelled, reference(), False, GatePolicy())
    assert [r.rule for r in verdict.rules] == ["finite", "max_predicted_exact_drop"]
    drop = rule(verdict, "max_predicted_exact_drop")
    assert drop.passed is True and drop.threshold == pytest.approx(0.02) and drop.interval == (0.0, 0.01)
    assert verdict.decision == "go"
    # low fidelity alone no longer decides anything by default
    low_fidelity = unlabelled.model_copy(update={"fidelity": Summary(mean=0.35, p05=0.12, min=0.03)})
    assert judge_candidate(low_fidelity, reference(), False, GatePolicy()).decision == "go"
    # and a candidate without a prediction is not a pass
    unpredicted = judge_candidate(candidate(puzzle_exact=None), reference(), False, GatePolicy())
    assert unpredicted.decision == "inconclusive" and "missing" in rule(unpredicted, "max_predicted_exact_drop").reason


def test_with_labels_the_measured_drop_supersedes_the_prediction() -> None:
    straddling = candidate(puzzle_exact=reference().puzzle_exact, predicted_puzzle_exact_drop=predicted(0.01, 0.05))
    verdict = judge_candidate(straddling, reference(), True, GatePolicy())
    assert [r.rule for r in verdict.rules] == ["finite", "max_puzzle_exact_drop"]
    assert rule(verdict, "max_puzzle_exact_drop").observed == pytest.approx(0.0)
    assert verdict.decision == "go"
    # the same candidate without labels is only as good as its prediction
    assert judge_candidate(straddling, reference(), False, GatePolicy()).decision == "inconclusive"
    # and a measured loss is a no-go whatever the prediction says
    lossy = candidate(puzzle_exact=0.604, predicted_puzzle_exact_drop=SAFE_DROP)
    assert judge_candidate(lossy, reference(), True, GatePolicy()).decision == "no_go"


def test_with_labels_but_no_measured_drop_rule_the_prediction_is_judged() -> None:
    policy = GatePolicy(max_puzzle_exact_drop=None)
    straddling = candidate(puzzle_exact=reference().puzzle_exact, predicted_puzzle_exact_drop=predicted(0.01, 0.05))
    verdict = judge_candidate(straddling, reference(), True, policy)
    assert [r.rule for r in verdict.rules] == ["finite", "max_predicted_exact_drop"]
    assert rule(verdict, "max_predicted_exact_drop").passed is None and verdict.decision == "inconclusive"
    safe = judge_candidate(candidate(predicted_puzzle_exact_drop=SAFE_DROP), reference(), True, policy)
    assert safe.decision == "go" and rule(safe, "max_predicted_exact_drop").passed is True
    # only max_puzzle_exact_drop supersedes: the cell-accuracy rule alone leaves the prediction listed
    cell_only = GatePolicy(max_puzzle_exact_drop=None, max_cell_accuracy_drop=0.01)
    assert [r.rule for r in judge_candidate(straddling, reference(), True, cell_only).rules] == [
        "finite", "max_predicted_exact_drop", "max_cell_accuracy_drop"]


def test_only_heads_false_go_is_caught_by_the_default_not_by_the_fidelity_floors() -> None:
    # `only-heads-int2` (docs/validity.md): the quantised output heads leave z_H untouched (fidelity 1.0)
    # while every answer changes; the predicted drop sees the changed answers.
    perfect = Summary(mean=1.0, p05=1.0, min=1.0, ci95=(1.0, 1.0), p05_ci95=(1.0, 1.0))
    only_heads = candidate("only-heads-int2", fidelity=perfect, answer_agreement=0.0, cell_accuracy=None, puzzle_exact=None,
                           predicted_puzzle_exact_drop=predicted(0.55, 0.9))
    unlabelled = job(only_heads, labels=False)

    default = judge(unlabelled, GatePolicy())
    assert default.decision == "no_go"
    drop = rule(default.candidates[0], "max_predicted_exact_drop")
    assert drop.passed is False and drop.interval == (0.55, 0.9)
    assert "only-heads-int2" in default.reasons[0] and "max_predicted_exact_drop" in default.reasons[0]

    floors = judge(unlabelled, FIDELITY_FLOORS)
    assert floors.decision == "go"  # the false go the default no longer gives
    assert {r.rule for r in floors.candidates[0].rules} == {"finite", "min_fidelity_mean", "min_fidelity_p05"}

    # with labels the measured collapse is a no-go under the default as well
    collapsed = only_heads.model_copy(update={"puzzle_exact": 0.0, "cell_accuracy": 0.1})
    assert judge(job(collapsed), GatePolicy()).decision == "no_go"
