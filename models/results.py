"""The evaluation result schema: what `carrygate evaluate --json` writes and the REST API returns.

Conventions (DESIGN.md "Definitions"):
- every fidelity is a token-wise cosine against the reference, accumulated in float64 on the carry
  *as each model computed it* at the end of an ACT step (before any host-side carry codec), over all
  T = puzzle prefix + seq_len positions, then averaged over positions (per puzzle) and puzzles;
- `fidelity` uses z_H at the candidate's last step vs the reference's last step; `fidelity_z_L` the same on z_L;
- `step_fidelity[t]` compares step t with the reference's step t (for t below both step counts);
- `consecutive_similarity` compares z_H of steps t and t-1 of the same model (t >= 1);
- agreement metrics compare argmax answers over all seq_len positions, labels not needed;
- `cell_accuracy` / `puzzle_exact` follow the official losses.py and are null without labels.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Summary(_Result):
    """A per-puzzle quantity summarised over puzzles."""

    mean: float | None
    p05: float | None = Field(None, description="5th percentile over puzzles")
    min: float | None = None
    ci95: tuple[float, float] | None = Field(None, description="bootstrap 95% interval of the mean")


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
    error_growth: float | None = Field(None, description="geometric-mean ratio of (1 - step fidelity) between consecutive steps")
    cell_accuracy: float | None = None
    puzzle_exact: float | None = None
    delta_cell_accuracy: float | None = None
    delta_puzzle_exact: float | None = None
    non_finite: NonFinite | None = None
    footprint: Footprint | None = None
    notes: list[str] = Field(default_factory=list)
    per_puzzle: dict[str, list[float]] = Field(default_factory=dict, description="fidelity, fidelity_z_L, exact (1/0)")


class EvaluationResult(_Result):
    schema_version: int = SCHEMA_VERSION
    puzzles: int
    labels: bool
    reference: ModelResult
    candidates: list[ModelResult]
    seconds: float
