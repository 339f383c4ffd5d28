"""The evaluation result schema: what `carrygate evaluate --json` writes and the REST API returns.

Conventions (DESIGN.md "Definitions"):
- every fidelity is a token-wise cosine against the reference, accumulated in float64 on the carry
  *as each model computed it* at the end of an ACT step (before any host-side carry codec), over all
  T = puzzle prefix + seq_len positions, then averaged over positions (per puzzle) and puzzles;
- `fidelity` uses z_H at the candidate's last step vs the reference's last step; `fidelity_z_L` the same on z_L;
- `step_fidelity[t]` compares step t with the reference's step t (for t below both step counts);
- `consecutive_similarity` compares z_H of steps t and t-1 of the same model (t >= 1);
- agreement metrics compare argmax answers over all seq_len positions, labels not needed;
- `cell_accuracy` / `puzzle_exact` follow the official losses.py and are null without labels;
- the label-free signals beyond fidelity (`settled_agreement`, `logit_kl_*`, `fidelity_tail`,
  `trajectory_area`, `late_drift_excess`) are defined in `models/signals.py`, and
  `predicted_puzzle_exact_drop` in `models/drop_model.py`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from carrygate.models.vocabulary import HaltingMode, Numerics

SCHEMA_VERSION = 1


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Summary(_Result):
    """A per-puzzle quantity summarised over puzzles."""

    mean: float | None
    p05: float | None = Field(None, description="5th percentile over puzzles")
    min: float | None = None
    ci95: tuple[float, float] | None = Field(None, description="bootstrap 95% interval of the mean")
    p05_ci95: tuple[float, float] | None = Field(None, description="bootstrap 95% interval of the 5th percentile")


class Curve(_Result):
    curve: list[float | None] = Field(description="one value per ACT step")
    mean: float | None


class NonFinite(_Result):
    step: int = Field(description="first ACT step (0-based) whose carry or logits held NaN/Inf")
    tensor: str
    puzzles: int = Field(description="puzzles affected in the batch where it was detected")


class Footprint(_Result):
    backbone_bytes: int
    embedding_table_bytes: int
    total_bytes: int
    carry_bytes_per_puzzle: int
    sram_streaming_bytes: int
    sram_full_load_bytes: int
    fits_8mb: bool
    fits_4mb: bool
    gflops_per_step: float
    gflops_per_puzzle: float
    artifact_bytes: int | None = Field(None, description="size of the serialised compressed weights")
    per_tensor: dict[str, int] = Field(default_factory=dict, description="bytes per stored tensor")
    notes: list[str] = Field(default_factory=list)


class OnnxArtifact(_Result):
    """The exact file an `onnxruntime` candidate was measured as (`models/export.py`)."""

    filename: str
    bytes: int
    sha256: str
    quantization: str = Field(description="none | dynamic | static | int4 (ONNX Runtime quantisation of the fp32 export)")
    opset: int
    exporter: str
    batch_size: int | None = Field(None, description="fixed batch of the graph; null = dynamic batch axis")
    flash_row: bool = False
    input_names: list[str]
    output_names: list[str]
    export_max_abs_diff: dict[str, float] = Field(default_factory=dict,
                                                  description="fp32 export vs PyTorch, one step from the same carry, per output")
    export_trajectory_max_abs_diff: dict[str, float] = Field(default_factory=dict,
                                                             description="fp32 export vs PyTorch, each running its own carry")
    nodes_excluded: list[str] = Field(default_factory=list, description="graph nodes kept in float (nodes_to_exclude resolved)")
    store_key: str | None = Field(None, description="artifact-store key, set by the service (GET /jobs/{id}/artifacts/{name})")
    notes: list[str] = Field(default_factory=list)


class OpTime(_Result):
    op_type: str
    calls_per_step: float
    us_per_step: float
    share: float = Field(description="share of the summed kernel time")


class LocalProfile(_Result):
    """ONNX Runtime on this machine's CPU: the exported step timed on real probe puzzles (host loop in Python)."""

    runtime: str
    threads: int
    batch_size: int
    puzzles: int = Field(description="puzzles timed (each a full host loop of `steps` steps)")
    steps: int
    step_latency_ms_p50: float
    step_latency_ms_p95: float
    step_latency_ms_mean: float
    puzzle_latency_ms_p50: float = Field(description="steps x step latency + host overhead, measured")
    puzzle_latency_ms_p95: float
    host_overhead_ms_per_puzzle: float = Field(description="puzzle wall time minus the time inside session.run")
    session_load_ms: float
    peak_memory_bytes: int | None = Field(None, description="peak RSS increase of a fresh process loading and running the session")
    model_file_bytes: int
    ops: list[OpTime] = Field(default_factory=list, description="per-op-type kernel time from ORT's Chrome-trace profile")
    notes: list[str] = Field(default_factory=list)


class DeviceProfile(_Result):
    """One Qualcomm AI Hub device: compile, on-device inference with profiling, outputs vs the reference."""

    status: Literal["ok", "inconclusive"]
    reason: str | None = None
    device_requested: str
    device_name: str | None = None
    device_os: str | None = None
    compile_job_id: str | None = None
    inference_job_id: str | None = None
    execution_summary: dict[str, Any] = Field(default_factory=dict, description="AI Hub's summary: times in µs, memory in bytes")
    compute_units: dict[str, int] = Field(default_factory=dict, description="layers per compute unit (NPU / GPU / CPU)")
    step_fidelity: list[float | None] = Field(default_factory=list, description="token cosine of on-device z_H vs reference, per step")
    step_max_abs_diff: list[float | None] = Field(default_factory=list, description="max |on-device z_H - reference|, per step")


class DropPrediction(_Result):
    """Predicted puzzle-exact drop (reference minus candidate; positive = a loss), label-free at
    prediction time, from a calibration fitted on labelled history (`models/drop_model.py`)."""

    mean: float
    lo: float = Field(description="lower end of the 90% interval")
    hi: float = Field(description="upper end of the 90% interval")
    calibration: str = Field(description="version of the calibration that made it")


class StepsUsed(_Result):
    """ACT steps a model ran per puzzle under adaptive halting."""

    mean: float | None
    p95: float | None
    max_steps: int
    histogram: list[int] = Field(description="histogram[k]: puzzles that halted after k + 1 ACT steps")


class AdaptiveHalting(_Result):
    """The model as a deployed host loop runs it: each puzzle stops at its own first halting step (`rule`, or
    after `max_steps`), its carry is frozen there and its answer taken there (`models/halting.py`). Comparisons
    are with the reference under the same policy; the model's other fields stay the fixed-depth evaluation."""

    rule: str = Field(description="q_halt > 0 (TRM, no_ACT_continue) or q_halt > q_continue (HRM)")
    max_steps: int
    steps_used: StepsUsed
    halted_early: float | None = Field(None, description="share of puzzles that halted before max_steps")
    halting_step_agreement: float | None = Field(None, description="share of puzzles that halt at the same step as the reference")
    halts_earlier: float | None = Field(None, description="share of puzzles that halt before the reference does")
    halts_later: float | None = Field(None, description="share of puzzles that halt after the reference does")
    steps_used_increase: float | None = Field(None, description="mean steps used minus the reference's (per puzzle, averaged)")
    fidelity_mean: float | None = Field(None, description="z_H at its halting step vs the reference's at its own, mean over puzzles")
    fidelity_p05: float | None = None
    step_fidelity: list[float | None] = Field(default_factory=list, description="per step, of the frozen-once-halted states")
    answer_agreement: float | None = Field(None, description="answers at the halting steps, equal to the reference's")
    cell_agreement: float | None = None
    cell_accuracy: float | None = None
    puzzle_exact: float | None = None
    delta_puzzle_exact: float | None = Field(None, description="puzzle_exact minus the reference's, both adaptive")
    gflops_per_puzzle: float | None = Field(None, description="as executed: mean steps used x footprint.gflops_per_step")


class ModelResult(_Result):
    name: str
    spec: dict[str, Any] | None = None
    spec_hash: str | None = None
    steps: int
    fidelity: Summary | None = None
    fidelity_z_L: Summary | None = None
    step_fidelity: list[float | None] = Field(default_factory=list)
    step_fidelity_z_L: list[float | None] = Field(default_factory=list)
    consecutive_similarity: Curve
    answer_agreement: float | None = None
    cell_agreement: float | None = None
    halting_agreement: float | None = None
    settled_agreement: float | None = Field(None, description="answer agreement over the puzzles the reference has settled")
    settled_puzzles: int | None = Field(None, description="reference only: how many puzzles it has settled")
    logit_kl_mean: float | None = Field(None, description="mean over puzzles of the per-cell KL(reference || candidate), final step")
    logit_kl_p95: float | None = Field(None, description="95th percentile over puzzles of the per-puzzle mean cell KL")
    fidelity_tail: float | None = Field(None, description="share of puzzles whose fidelity is below the job's noise-floor tau")
    trajectory_area: float | None = Field(None, description="mean over steps and puzzles of 1 - step fidelity")
    late_drift_excess: float | None = Field(None, description="final-step z_H change of the candidate minus the reference's")
    predicted_puzzle_exact_drop: DropPrediction | None = None
    error_growth: float | None = Field(None, description="geometric-mean ratio of (1 - step fidelity) between consecutive steps")
    cell_accuracy: float | None = None
    puzzle_exact: float | None = None
    delta_cell_accuracy: float | None = None
    delta_puzzle_exact: float | None = None
    non_finite: NonFinite | None = None
    footprint: Footprint | None = None
    notes: list[str] = Field(default_factory=list)
    per_puzzle: dict[str, list[float]] = Field(default_factory=dict, description="per-puzzle values, in probe order "
                                               "(`models/signals.py` PER_PUZZLE names them)")
    artifact: OnnxArtifact | None = Field(None, description="onnxruntime candidates: the measured file")
    profile: LocalProfile | None = Field(None, description="onnxruntime candidates: ORT profile on this CPU")
    device_profiles: list[DeviceProfile] = Field(default_factory=list, description="Qualcomm AI Hub, when requested")
    adaptive: AdaptiveHalting | None = Field(None, description="under halting: adaptive, the model as deployed (models/halting.py)")


class EvaluationResult(_Result):
    schema_version: int = SCHEMA_VERSION
    puzzles: int
    labels: bool
    reference: ModelResult
    candidates: list[ModelResult]
    seconds: float
    halting: HaltingMode = Field("fixed", description="adaptive: each model also carries its `adaptive` block")
    max_steps: int | None = Field(None, description="ACT steps per puzzle at most (fixed: exactly); null = each model's halt_max_steps")
    noise_floor: ModelResult | None = Field(None, description="the reference under a harmless perturbation (bf16, or fp32 for "
                                            "a half-precision reference): its fidelity spread sets fidelity_tail_tau")
    fidelity_tail_tau: float | None = Field(None, description="1st percentile of the noise floor's per-puzzle fidelity")
    numerics: Numerics | None = Field(
        None, description="exact: the official eager step; fast: models/fast.py (same maths, rounding may differ); "
                          "null: stored before the choice existed (exact)")
    compiled: bool | None = Field(None, description="whether the steps ran through torch.compile (fast numerics only)")
    reference_cached: bool | None = Field(
        None, description="true: the reference and noise floor were replayed from the reference cache; false: computed; null: no cache")
