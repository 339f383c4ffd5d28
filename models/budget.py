"""A job's compute cost, in GFLOPs, from the analytic FLOP counts of `models/footprint.py`.

The cost is what the lockstep engine will run: every probe puzzle through the reference, its noise
floor (`models/evaluate.py::noise_floor`, a second copy of the reference) and each candidate, each at
`halt_max_steps` ACT steps (evaluation never halts early) under the candidate's own depth overrides,
plus the probe puzzles a candidate runs for calibration or profiling. The API refuses a job whose cost
exceeds `CARRYGATE_MAX_JOB_GFLOP` at submission; the worker checks again once the checkpoint's full
config and the real probe size are known (an official checkpoint's config is completed from its
tensors, and a dataset probe's size is read from its files).
"""

from __future__ import annotations

from dataclasses import dataclass

from carrygate.models.compress.spec import CompressionSpec
from carrygate.models.config import HRMConfig, TRMConfig
from carrygate.models.footprint import flops_per_puzzle


@dataclass(frozen=True)
class JobCost:
    gflop: float
    puzzles: int
    per_model_gflop_per_puzzle: dict[str, float]  # "reference" and each candidate's name or index

    def describe(self, limit: float) -> str:
        return (f"the job costs {self.gflop:.4g} GFLOP ({self.puzzles} puzzles through the reference, its noise floor and "
                f"{len(self.per_model_gflop_per_puzzle) - 1} candidate(s)), over the limit of {limit:.4g} GFLOP "
                "(CARRYGATE_MAX_JOB_GFLOP); use fewer puzzles (options.limit, probe.size), fewer candidates or smaller depth")


def candidate_config(config: TRMConfig | HRMConfig, spec: CompressionSpec) -> TRMConfig | HRMConfig:
    """The config a candidate runs under: the reference's with the spec's depth overrides.
    `model_copy` skips validation on purpose: a cost is wanted even for depths the model would refuse."""
    if spec.depth is None:
        return config
    return config.model_copy(update=spec.depth.model_dump(exclude_none=True))


def _extra_puzzles(spec: CompressionSpec, puzzles: int) -> int:
    """Probe puzzles a candidate runs beyond the lockstep run: activation / ORT calibration, the ORT profile."""
    extra = 0
    if spec.activations is not None:
        extra += min(spec.activations.calibration_puzzles, puzzles)
    if spec.onnxruntime is not None:
        if spec.onnxruntime.quantization == "static":
            extra += min(spec.onnxruntime.calibration_puzzles, puzzles)
        extra += min(spec.onnxruntime.profile_repeats, puzzles)
    return extra


def job_cost(config: TRMConfig | HRMConfig, specs: list[CompressionSpec], puzzles: int) -> JobCost:
    """GFLOPs of evaluating `specs` against a reference with `config` on `puzzles` probe puzzles."""
    reference = flops_per_puzzle(config) / 1e9
    per_model = {"reference": reference}
    total = 2 * reference * puzzles  # the reference and its noise floor
    for i, spec in enumerate(specs):
        each = flops_per_puzzle(candidate_config(config, spec)) / 1e9
        per_model[spec.name or f"candidates[{i}]"] = each
        total += each * (puzzles + _extra_puzzles(spec, puzzles))
    return JobCost(gflop=total, puzzles=puzzles, per_model_gflop_per_puzzle=per_model)


SEARCH_EVALUATIONS = 100
"""Candidate evaluations a recommendation search runs on its search probe, for the cost estimate (the zoo
searches ran 65-70, `docs/recommend.md`); the finalists (at most 3 rounds of 3) run on the full probe."""
FINALIST_EVALUATIONS = 9


def recommend_cost(config: TRMConfig | HRMConfig, search_puzzles: int, puzzles: int) -> JobCost:
    """Estimated GFLOPs of `recommend` on `puzzles` probe puzzles: the reference and its noise floor once
    (their trajectories are replayed), `SEARCH_EVALUATIONS` candidates on the first `search_puzzles` and
    `FINALIST_EVALUATIONS` on all, each at the reference's cost per puzzle."""
    reference = flops_per_puzzle(config) / 1e9
    runs = SEARCH_EVALUATIONS * min(search_puzzles, puzzles) + FINALIST_EVALUATIONS * puzzles
    return JobCost(gflop=reference * (2 * puzzles + runs), puzzles=puzzles,
                   per_model_gflop_per_puzzle={"reference": reference, "search evaluation": reference})


def describe_recommend_cost(cost: JobCost, search_puzzles: int, limit: float) -> str:
    return (f"the search is estimated at {cost.gflop:.4g} GFLOP (about {SEARCH_EVALUATIONS} candidate evaluations on "
            f"{min(search_puzzles, cost.puzzles)} puzzles and {FINALIST_EVALUATIONS} finalists on {cost.puzzles}), over the limit "
            f"of {limit:.4g} GFLOP (CARRYGATE_MAX_JOB_GFLOP); use fewer puzzles (options.limit, options.search_puzzles, probe.size)")
