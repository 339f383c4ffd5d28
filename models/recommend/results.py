"""Typed results of `carrygate recommend`: budget, tolerance, the sensitivity map, the front and the choice."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from carrygate.models.recommend.groups import ModuleGroup


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Budget(_Data):
    """What the deployment may cost; every bound given must hold (at least one is required)."""

    max_weight_fraction: float | None = Field(None, gt=0.0, le=4.0, description="deployed weight bytes / the fp32 reference's")
    max_weight_bytes: int | None = Field(None, gt=0)
    max_sram_bytes: int | None = Field(None, gt=0, description="footprint.sram_streaming_bytes")
    max_gflop_per_puzzle: float | None = Field(None, gt=0.0)
    max_step_ms: float | None = Field(None, gt=0.0, description="estimated step latency (see Cost.step_ms)")

    @model_validator(mode="after")
    def _one_bound(self) -> Budget:
        if all(v is None for v in self.model_dump().values()):
            raise ValueError("budget: give at least one bound")
        return self


class Tolerance(_Data):
    """How much damage is allowed, label-free: the predicted puzzle-exact drop's 90% upper end, or a fidelity floor."""

    max_predicted_drop: float | None = Field(None, ge=0.0, le=1.0)
    min_fidelity: float | None = Field(None, ge=-1.0, le=1.0)

    @model_validator(mode="after")
    def _exactly_one(self) -> Tolerance:
        if (self.max_predicted_drop is None) == (self.min_fidelity is None):
            raise ValueError("tolerance: give exactly one of max_predicted_drop, min_fidelity")
        return self


class Cost(_Data):
    """Footprint of a candidate as the budget sees it (models/footprint.py)."""

    weight_bytes: int
    weight_fraction: float
    sram_bytes: int
    gflop_per_puzzle: float
    step_ms: float = Field(description="reference's measured CPU step time x this candidate's FLOP ratio (an estimate: "
                           "it ignores any speed-up of quantised kernels)")


class Damage(_Data):
    """Label-free damage of one evaluated candidate on the probe it ran on; labelled fields when labels exist."""

    fidelity: float | None
    fidelity_p05: float | None
    predicted_drop_mean: float | None
    predicted_drop_hi: float | None
    answer_agreement: float | None
    non_finite: bool = False
    puzzle_exact_drop: float | None = Field(None, description="measured, reference minus candidate; needs labels")


class SensitivityCell(_Data):
    row: str = Field(description="group name, kind:<kind>, layer:<layer>, embeddings, or step>=<s>")
    axis: Literal["group", "kind", "layer", "embeddings", "step"]
    bits: int | None = Field(None, description="weight bits of the compressed part (None: int8 puzzle table)")
    damage: Damage


class SensitivityMap(_Data):
    puzzles: int
    cells: list[SensitivityCell]
    order: list[str] = Field(description="groups, most sensitive first (the order the search protects them in)")


class Point(_Data):
    """One configuration the search evaluated."""

    name: str
    spec: dict[str, Any]
    bits: dict[str, int | None] = Field(description="bits per group; None = float")
    depth_steps: int
    cost: Cost
    damage: Damage
    stage: str = Field(description="baseline | ladder | bisect | greedy | depth | prune | precision | ort")
    within_budget: bool
    within_tolerance: bool
    on_front: bool = False


class Finalist(_Data):
    name: str
    spec: dict[str, Any]
    cost: Cost
    damage: Damage = Field(description="on the full probe")
    confirmed: bool
    reason: str
    verdict: str | None = Field(None, description="the gate's decision on this finalist alone, full probe")


class Recommendation(_Data):
    """Everything `carrygate recommend` found; `chosen` is the spec written to the YAML."""

    schema_version: int = 1
    checkpoint: str | None = None
    budget: Budget
    tolerance: Tolerance
    groups: list[ModuleGroup]
    reference_bytes: int
    reference_steps: int
    reference_step_ms: float
    search_puzzles: int
    probe_puzzles: int
    labels: bool
    sensitivity: SensitivityMap
    points: list[Point]
    finalists: list[Finalist]
    chosen: Finalist | None
    verdict: str | None = Field(None, description="the default gate policy's decision on the chosen spec, full probe")
    evaluations: int = Field(description="candidate evaluations (model runs over the search probe or the full probe)")
    reference_steps_computed: int
    reference_steps_replayed: int
    seconds: float
    notes: list[str] = Field(default_factory=list)
