"""Halting as deployed: each puzzle stops at its own first halting step, and its answer is taken there.

The official evaluation never halts early: every puzzle runs `halt_max_steps` ACT steps (TRM_FACTS
§3.2), and that is `halting: fixed`, carrygate's default. An edge host loop that pays per step stops a
puzzle as soon as the model says it is done:
- TRM (`no_ACT_continue: true`, the released configs): halt when `q_halt_logits > 0`;
- HRM, and TRM with `no_ACT_continue: false`: halt when `q_halt_logits > q_continue_logits`;
- and in any case after `max_steps` steps (default: the model's own `halt_max_steps`).
Compression moves that decision, so `halting: adaptive` measures it, for the reference and for each
candidate independently.

How the lockstep engine (`models/trajectory.py`) runs it: every model still advances its whole batch
one ACT step at a time, so the fixed-depth measurements of the result stay exactly those of
`halting: fixed`. Beside them, one `HaltTracker` per model and batch keeps the *deployed* state: a
puzzle's carry and answer follow the model until its halting step and are frozen from then on. The
adaptive metrics stream from those frozen states — per-step sums per batch, final values per puzzle —
into an `AdaptiveAccumulator` per model, serialisable like the engine's own, so puzzle shards merge
exactly. The result is `ModelResult.adaptive` (`models/results.py`: `AdaptiveHalting`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from carrygate.models.metrics import per_puzzle_accuracy, token_cosine
from carrygate.models.reasoner import StepOutput
from carrygate.models.vocabulary import HaltingMode


class Halting(BaseModel):
    """The halting policy of an evaluation or a job (`options.halting`); a bare string means the mode."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: HaltingMode = Field("fixed", description="fixed: every puzzle runs max_steps ACT steps (the official evaluation); "
                              "adaptive: each puzzle stops at its own first halting step (TRM q_halt > 0, HRM q_halt > q_continue)")
    max_steps: int | None = Field(None, ge=1, le=1024, description="ACT steps per puzzle at most (fixed: exactly); "
                                  "null = each model's own halt_max_steps")

    @model_validator(mode="before")
    @classmethod
    def _mode_alone(cls, value: Any) -> Any:
        return {"mode": value} if isinstance(value, str) else value

    @property
    def adaptive(self) -> bool:
        return self.mode == "adaptive"

    def steps_for(self, config: Any) -> int:
        """ACT steps a model with this config runs (its trained halt_max_steps unless capped)."""
        return int(self.max_steps or config.halt_max_steps)


FIXED = Halting()


def halt_rule(config: Any) -> str:
    """The deployed halting rule of a model config, as written in the result."""
    return "q_halt > 0" if getattr(config, "no_ACT_continue", False) else "q_halt > q_continue"


def wants_halt(config: Any, out: StepOutput) -> torch.Tensor:
    """(B,) bool: which puzzles the model says are done after this step (TRM_FACTS §3.2 step 6)."""
    if getattr(config, "no_ACT_continue", False):
        return out.q_halt_logits > 0
    return out.q_halt_logits > out.q_continue_logits


@dataclass
class HaltTracker:
    """One model's deployed state on one batch: which puzzles halted, after how many steps, and the
    carry and answer each puzzle halted with (frozen from its halting step on)."""

    config: Any
    steps: int
    batch: int
    halted: torch.Tensor = field(init=False)
    steps_used: torch.Tensor = field(init=False)
    z_H: torch.Tensor | None = None
    z_L: torch.Tensor | None = None
    preds: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.halted = torch.zeros(self.batch, dtype=torch.bool)
        self.steps_used = torch.zeros(self.batch, dtype=torch.int64)

    def observe(self, t: int, out: StepOutput) -> None:
        """Step t (0-based) ran: puzzles still running take its carry and answer; those that halt now keep them."""
        running = ~self.halted
        preds = out.logits.argmax(-1)
        if self.z_H is None or self.z_L is None or self.preds is None:  # step 0: every puzzle is running
            self.z_H, self.z_L, self.preds = out.carry.z_H, out.carry.z_L, preds
        else:
            keep = running.view(-1, 1, 1)
            self.z_H = torch.where(keep, out.carry.z_H, self.z_H)
            self.z_L = torch.where(keep, out.carry.z_L, self.z_L)
            self.preds = torch.where(running.view(-1, 1), preds, self.preds)
        now = running & (wants_halt(self.config, out) | (t + 1 >= self.steps))
        self.steps_used = torch.where(now, torch.full_like(self.steps_used, t + 1), self.steps_used)
        self.halted = self.halted | now


@dataclass
class AdaptiveAccumulator:
    """What one model contributes under adaptive halting over a run of batches (mirrors the engine's
    `_Accumulator`: per-step sums one row per batch, per-puzzle final values one array per batch)."""

    steps: int
    rule: str  # halt_rule of the model's config: the reference's is needed where no model is at hand (finish)
    step_fid: list[np.ndarray] = field(default_factory=list)
    step_count: list[np.ndarray] = field(default_factory=list)
    steps_used: list[np.ndarray] = field(default_factory=list)
    fid_H: list[np.ndarray] = field(default_factory=list)
    answer_equal: list[np.ndarray] = field(default_factory=list)
    same_step: list[np.ndarray] = field(default_factory=list)
    step_delta: list[np.ndarray] = field(default_factory=list)  # own steps used minus the reference's
    exact: list[np.ndarray] = field(default_factory=list)
    accuracy: list[np.ndarray] = field(default_factory=list)
    cell_equal: int = 0
    cells: int = 0

    _ROWS = ("step_fid", "step_count")
    _PER_PUZZLE = ("steps_used", "fid_H", "answer_equal", "same_step", "step_delta", "exact", "accuracy")

    def new_row(self) -> None:
        for name in self._ROWS:
            getattr(self, name).append(np.zeros(self.steps))

    def drop_row(self) -> None:
        for name in self._ROWS:
            getattr(self, name).pop()

    def observe_step(self, t: int, own: HaltTracker, reference: HaltTracker) -> None:
        """Streamed per step: fidelity of the deployed (frozen after halting) z_H against the reference's."""
        assert own.z_H is not None and reference.z_H is not None
        self.step_fid[-1][t] = float(token_cosine(own.z_H, reference.z_H).mean(-1).sum())
        self.step_count[-1][t] = own.batch

    def finish_batch(self, own: HaltTracker, reference: HaltTracker | None, labels: torch.Tensor | None) -> None:
        """The batch's per-puzzle values, from the answers each puzzle halted with (None reference: this is it)."""
        assert own.preds is not None and own.z_H is not None
        self.steps_used.append(own.steps_used.numpy().astype(np.int64))
        if labels is not None:
            accuracy, exact, valid = per_puzzle_accuracy(own.preds, labels)
            self.accuracy.append(accuracy[valid].numpy())
            self.exact.append(exact[valid].float().numpy())
        if reference is None:
            return
        assert reference.preds is not None and reference.z_H is not None
        self.fid_H.append(token_cosine(own.z_H, reference.z_H).mean(-1).numpy())
        same = own.preds == reference.preds
        self.answer_equal.append(same.all(-1).float().numpy())
        self.cell_equal += int(same.sum())
        self.cells += same.numel()
        delta = own.steps_used - reference.steps_used
        self.same_step.append((delta == 0).float().numpy())
        self.step_delta.append(delta.numpy().astype(np.int64))

    def extend(self, later: AdaptiveAccumulator) -> None:
        for name in (*self._ROWS, *self._PER_PUZZLE):
            getattr(self, name).extend(getattr(later, name))
        self.cell_equal += later.cell_equal
        self.cells += later.cells

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"steps": self.steps, "rule": self.rule, "cell_equal": self.cell_equal, "cells": self.cells}
        for name in self._ROWS:
            body[name] = [row.tolist() for row in getattr(self, name)]
        for name in self._PER_PUZZLE:
            body[name] = [{"dtype": str(c.dtype), "values": c.tolist()} for c in getattr(self, name)]
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> AdaptiveAccumulator:
        acc = cls(int(body["steps"]), str(body["rule"]), cell_equal=int(body["cell_equal"]), cells=int(body["cells"]))
        for name in cls._ROWS:
            setattr(acc, name, [np.asarray(row, dtype=np.float64) for row in body[name]])
        for name in cls._PER_PUZZLE:
            setattr(acc, name, [np.asarray(c["values"], dtype=c["dtype"]) for c in body[name]])
        return acc


def _concat(chunks: list[np.ndarray], dtype: Any = np.float64) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)


def _mean(chunks: list[np.ndarray]) -> float | None:
    values = _concat(chunks)
    return float(values.mean()) if values.size else None


def adaptive_result(acc: AdaptiveAccumulator, reference: Any | None, has_labels: bool) -> Any:
    """The `AdaptiveHalting` block of one model (`reference`: the reference's block, None for the reference itself)."""
    from carrygate.models.results import AdaptiveHalting, StepsUsed

    used = _concat(acc.steps_used, np.int64)
    histogram = np.bincount(used, minlength=acc.steps + 1)[1:].tolist() if used.size else [0] * acc.steps
    steps_used = StepsUsed(mean=float(used.mean()) if used.size else None,
                           p95=float(np.percentile(used, 95)) if used.size else None, max_steps=acc.steps, histogram=histogram)
    block = AdaptiveHalting(rule=acc.rule, max_steps=acc.steps, steps_used=steps_used,
                            halted_early=float((used < acc.steps).mean()) if used.size else None)
    if has_labels:
        block.cell_accuracy, block.puzzle_exact = _mean(acc.accuracy), _mean(acc.exact)
    if reference is None:
        return block
    sums = [math.fsum(row[t] for row in acc.step_fid) for t in range(acc.steps)]
    counts = [int(sum(int(row[t]) for row in acc.step_count)) for t in range(acc.steps)]
    block.step_fidelity = [s / c if c else None for s, c in zip(sums, counts, strict=True)]
    fid = _concat(acc.fid_H)
    block.fidelity_mean = float(fid.mean()) if fid.size else None
    block.fidelity_p05 = float(np.percentile(fid, 5)) if fid.size else None
    block.answer_agreement = _mean(acc.answer_equal)
    block.cell_agreement = acc.cell_equal / acc.cells if acc.cells else None
    block.halting_step_agreement = _mean(acc.same_step)
    delta = _concat(acc.step_delta, np.int64)
    if delta.size:
        block.halts_earlier, block.halts_later = float((delta < 0).mean()), float((delta > 0).mean())
        block.steps_used_increase = float(delta.mean())
    if block.puzzle_exact is not None and reference.puzzle_exact is not None:
        block.delta_puzzle_exact = block.puzzle_exact - reference.puzzle_exact
    return block


def new_accumulator(config: Any, halting: Halting) -> AdaptiveAccumulator:
    return AdaptiveAccumulator(halting.steps_for(config), halt_rule(config))


def per_puzzle_steps(acc: AdaptiveAccumulator) -> list[float]:
    """Steps used per puzzle, in probe order (for `ModelResult.per_puzzle["steps_used"]`)."""
    return _concat(acc.steps_used, np.int64).astype(np.float64).tolist()


def attach_executed_gflops(models: list[Any]) -> None:
    """GFLOPs per puzzle as executed under adaptive halting: mean steps used x the footprint's GFLOPs per step."""
    for model in models:
        if model.adaptive is not None and model.footprint is not None and model.adaptive.steps_used.mean is not None:
            model.adaptive.gflops_per_puzzle = model.adaptive.steps_used.mean * model.footprint.gflops_per_step


def as_halting(value: Halting | str | dict[str, Any] | None) -> Halting:
    """A job's stored `options.halting` (a dict, a bare mode, or absent: fixed) as a `Halting`."""
    if value is None:
        return FIXED
    return value if isinstance(value, Halting) else Halting.model_validate(value)
