"""Lockstep trajectory engine: the reference once, K candidates on the same batches, step by step.

For every probe batch the reference and each candidate start from their initial carry and advance
one ACT step at a time together. After each step the engine reduces what it needs on the spot —
sums of token-wise cosines against the reference, consecutive-step cosines, non-finite checks — and
keeps only the previous step's z_H per model. Memory is O(batch) in the number of steps; what is kept
is one row of per-step sums per batch and the per-puzzle final values (a few floats each) for
histograms and intervals.

`run_lockstep` = `finish(run_partial(...))`. A job split into shards on batch boundaries runs
`run_partial` per shard, then `finish(merge(partials))`: the per-batch sums are added with
`math.fsum` (correctly rounded, so grouping cannot change them) and the per-puzzle arrays are
concatenated in puzzle order, so the result equals a single run bit for bit.

Definitions: `models/results.py`. The reference's outputs are computed once per batch and shared by
all K candidates, which is where the K-candidate saving comes from.

Over 400 lines on purpose: the accumulators, `run_partial`, `merge` and `finish` share one per-batch
layout, and keeping them together keeps that layout in one place.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from carrygate.models import signals
from carrygate.models.compress.spec import CompressionSpec
from carrygate.models.fast import fast_step
from carrygate.models.halting import (
    FIXED,
    AdaptiveAccumulator,
    Halting,
    HaltTracker,
    adaptive_result,
    as_halting,
    new_accumulator,
    per_puzzle_steps,
)
from carrygate.models.metrics import logit_kl, per_puzzle_accuracy, token_cosine
from carrygate.models.reasoner import Carry, RecursiveReasoner, StepOutput, SteppedModel
from carrygate.models.reference_cache import ReferenceTrace
from carrygate.models.results import Curve, EvaluationResult, ModelResult, NonFinite, Summary
from carrygate.models.vocabulary import Numerics

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # inputs, puzzle ids, labels (or None)


@dataclass
class Candidate:
    """A model to run beside the reference. The `noise_floor` role is the reference under a harmless
    perturbation: it runs like a candidate, is reported apart, and sets `fidelity_tail`'s tau."""

    name: str
    model: SteppedModel  # what `models.compress.apply` built (a CompressedCandidate), or any stepped model
    spec: CompressionSpec | None = None
    role: Literal["candidate", "noise_floor"] = "candidate"


@dataclass
class _Accumulator:
    """What one model contributes over a run of batches; serialisable, so shards can be merged.

    Per-step sums are kept as one row per batch (not added up on the spot): `finish` adds the rows
    with `math.fsum`, which is correctly rounded and so independent of grouping. A job split into
    shards on batch boundaries therefore reduces to exactly the numbers of a single run. Per-puzzle
    lists hold only final values, one array per batch."""

    steps: int
    step_fid_H: list[np.ndarray] = field(default_factory=list)
    step_fid_L: list[np.ndarray] = field(default_factory=list)
    step_count: list[np.ndarray] = field(default_factory=list)
    consec: list[np.ndarray] = field(default_factory=list)
    consec_count: list[np.ndarray] = field(default_factory=list)
    fid_H: list[np.ndarray] = field(default_factory=list)
    fid_L: list[np.ndarray] = field(default_factory=list)
    answer_equal: list[np.ndarray] = field(default_factory=list)
    cell_equal: int = 0
    cells: int = 0
    halt_equal: int = 0
    exact: list[np.ndarray] = field(default_factory=list)
    accuracy: list[np.ndarray] = field(default_factory=list)
    # per puzzle, for the signals of models/signals.py
    cell_agreement: list[np.ndarray] = field(default_factory=list)
    logit_kl: list[np.ndarray] = field(default_factory=list)
    q_halt: list[np.ndarray] = field(default_factory=list)
    consecutive_final: list[np.ndarray] = field(default_factory=list)
    consecutive_mean: list[np.ndarray] = field(default_factory=list)
    trajectory_area: list[np.ndarray] = field(default_factory=list)
    non_finite: NonFinite | None = None

    _ROWS = ("step_fid_H", "step_fid_L", "step_count", "consec", "consec_count")
    _PER_PUZZLE = ("fid_H", "fid_L", "answer_equal", "exact", "accuracy", "cell_agreement", "logit_kl", "q_halt",
                   "consecutive_final", "consecutive_mean", "trajectory_area")

    def new_row(self) -> None:
        """Open this batch's row of per-step sums (a model skipped after a non-finite step gets none)."""
        for name in self._ROWS:
            getattr(self, name).append(np.zeros(self.steps))

    def extend(self, later: _Accumulator) -> None:
        """Append a later run of batches (the next shard). After a non-finite batch a model took no
        further batches, so a later shard's batches are dropped for it, as a single run would."""
        if self.non_finite is not None:
            return
        for name in (*self._ROWS, *self._PER_PUZZLE):
            getattr(self, name).extend(getattr(later, name))
        self.cell_equal += later.cell_equal
        self.cells += later.cells
        self.halt_equal += later.halt_equal
        self.non_finite = later.non_finite

    def to_json(self) -> dict[str, Any]:
        """JSON-safe; floats round-trip exactly and each per-puzzle array keeps its dtype."""
        body: dict[str, Any] = {"steps": self.steps, "cell_equal": self.cell_equal, "cells": self.cells, "halt_equal": self.halt_equal,
                                "non_finite": self.non_finite.model_dump(mode="json") if self.non_finite else None}
        for name in self._ROWS:
            body[name] = [row.tolist() for row in getattr(self, name)]
        for name in self._PER_PUZZLE:
            chunks = getattr(self, name)
            body[name] = [{"dtype": str(c.dtype), "values": c.tolist()} for c in chunks]
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> _Accumulator:
        acc = cls(int(body["steps"]), cell_equal=int(body["cell_equal"]), cells=int(body["cells"]), halt_equal=int(body["halt_equal"]),
                  non_finite=NonFinite.model_validate(body["non_finite"]) if body["non_finite"] else None)
        for name in cls._ROWS:
            setattr(acc, name, [np.asarray(row, dtype=np.float64) for row in body[name]])
        for name in cls._PER_PUZZLE:  # .get: partials stored before a per-puzzle value existed
            setattr(acc, name, [np.asarray(c["values"], dtype=c["dtype"]) for c in body.get(name, [])])
        return acc


@dataclass
class Partial:
    """The engine's state after a run of batches: reference and candidate accumulators, in order."""

    reference: _Accumulator
    candidates: list[_Accumulator]
    puzzles: int = 0
    labels: bool = True  # every batch so far had labels
    seconds: float = 0.0
    halting: Halting = FIXED
    # adaptive halting (models/halting.py): the reference's accumulator, then each candidate's; None under fixed
    adaptive: list[AdaptiveAccumulator] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"puzzles": self.puzzles, "labels": self.labels, "seconds": self.seconds, "reference": self.reference.to_json(),
                "candidates": [a.to_json() for a in self.candidates], "halting": self.halting.model_dump(mode="json"),
                "adaptive": [a.to_json() for a in self.adaptive] if self.adaptive is not None else None}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Partial:
        adaptive = body.get("adaptive")  # .get: partials stored before halting existed
        return cls(_Accumulator.from_json(body["reference"]), [_Accumulator.from_json(a) for a in body["candidates"]],
                   int(body["puzzles"]), bool(body["labels"]), float(body["seconds"]), as_halting(body.get("halting")),
                   [AdaptiveAccumulator.from_json(a) for a in adaptive] if adaptive is not None else None)


def merge(partials: list[Partial]) -> Partial:
    """Shards' partials, in shard (puzzle) order, as one partial: lists concatenated, counts added."""
    if not partials:
        raise ValueError("merge: no partials")
    first = Partial.from_json(partials[0].to_json())  # a copy: the inputs stay untouched
    for later in partials[1:]:
        if len(later.candidates) != len(first.candidates):
            raise ValueError("merge: partials of different candidate lists")
        first.reference.extend(later.reference)
        for acc, more in zip(first.candidates, later.candidates, strict=True):
            acc.extend(more)
        first.puzzles += later.puzzles
        first.labels = first.labels and later.labels
        first.seconds += later.seconds
        if first.adaptive is not None and later.adaptive is not None:
            for adaptive, more in zip(first.adaptive, later.adaptive, strict=True):
                adaptive.extend(more)
    return first


def _finite_problem(out: StepOutput) -> tuple[str, int] | None:
    for name, t in (("z_H", out.carry.z_H), ("z_L", out.carry.z_L), ("logits", out.logits), ("q_halt_logits", out.q_halt_logits)):
        bad = ~torch.isfinite(t)
        if bad.any():
            return name, int(bad.reshape(bad.shape[0], -1).any(-1).sum())
    return None


def _summary(values: np.ndarray, rng: np.random.Generator, resamples: int = 1000) -> Summary:
    if values.size == 0:
        return Summary(mean=None)
    idx = rng.integers(0, values.size, size=(resamples, values.size))
    means = values[idx].mean(axis=1)
    p05s = np.percentile(values[idx], 5, axis=1)
    return Summary(
        mean=float(values.mean()),
        p05=float(np.percentile(values, 5)),
        min=float(values.min()),
        ci95=(float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))),
        p05_ci95=(float(np.percentile(p05s, 2.5)), float(np.percentile(p05s, 97.5))),
    )


def _ratio_curve(sum_rows: list[np.ndarray], count_rows: list[np.ndarray], steps: int) -> list[float | None]:
    """Per step: (exact sum of the batches' sums) / (their puzzle count)."""
    sums = [math.fsum(row[t] for row in sum_rows) for t in range(steps)]
    counts = [int(sum(int(row[t]) for row in count_rows)) for t in range(steps)]
    return [s / c if c else None for s, c in zip(sums, counts, strict=True)]


def _error_growth(step_fidelity: list[float | None]) -> float | None:
    errors = [1.0 - f for f in step_fidelity if f is not None]
    ratios = [b / a for a, b in zip(errors, errors[1:], strict=False) if a > 1e-9 and b > 0]
    return float(math.exp(sum(math.log(r) for r in ratios) / len(ratios))) if ratios else None


def run_lockstep(
    reference: RecursiveReasoner,
    candidates: list[Candidate],
    batches: Iterable[Batch],
    *,
    on_batch: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    seed: int = 0,
    numerics: Numerics = "fast",
    compile_steps: bool = False,
    halting: Halting | str | dict[str, Any] | None = None,
    replay: ReferenceTrace | None = None,
    record: ReferenceTrace | None = None,
) -> EvaluationResult:
    """Run reference and candidates side by side over `batches`; see the module docstring.

    Args:
        on_batch: called with the number of puzzles just processed (progress).
        should_stop: polled before every ACT step; True stops early (cancellation, lease loss, a time
            limit) with the results of the batches finished so far (the interrupted batch is dropped).
        numerics: "exact" runs every model's official eager step (bit-identical to the official code);
            "fast" runs `models.fast` (same maths, rounding may differ; see docs/benchmarks.md).
        compile_steps: with fast numerics, run the steps through the one shared `torch.compile`d step
            (worth it for full-size models and many puzzles: `models.fast.compile_pays`).
        replay: the reference's cached trace for exactly these batches (`models.reference_cache`):
            the reference (and the noise floor) are not run again. Fixed halting only.
        record: an empty trace to fill with this run's reference (and noise floor), for the cache.
        halting: `models.halting.Halting` (None: fixed). Under adaptive the result is the fixed one plus each
            model's `adaptive` block; `max_steps` sets every model's step count.
    """
    partial = run_partial(reference, candidates, batches, on_batch=on_batch, should_stop=should_stop, numerics=numerics,
                          compile_steps=compile_steps, halting=halting, replay=replay, record=record)
    return finish(partial, candidates, seed=seed)


def _step_function(model: SteppedModel, numerics: Numerics, compile_steps: bool) -> Callable[..., StepOutput]:
    if numerics == "exact":
        if compile_steps:
            raise ValueError("exact numerics run the official eager step; compile_steps needs fast numerics")
        return model.step
    return fast_step(model, compile_steps)


def _device_of(model: Any) -> torch.device:
    """Where a stepped model computes: a module's device, a wrapper's (a candidate, a replay) model's, else the CPU."""
    while not isinstance(model, torch.nn.Module) and hasattr(model, "model"):
        model = model.model
    return model.device if isinstance(model, RecursiveReasoner) else torch.device("cpu")


def _on(out: StepOutput, device: torch.device) -> StepOutput:
    """A candidate's step output on the job's device (an ONNX Runtime file answers on the host)."""
    if out.logits.device == device:
        return out
    carry = Carry(out.carry.z_H.to(device), out.carry.z_L.to(device))
    return StepOutput(carry, out.logits.to(device), out.q_halt_logits.to(device), out.q_continue_logits.to(device))


def _host(t: torch.Tensor) -> np.ndarray:
    """A per-puzzle tensor reduced on the model's device, brought to the host."""
    return t.detach().cpu().numpy()


def _truncate(acc: _Accumulator, batches: int) -> None:
    """Keep a replayed accumulator's first `batches` batches (the run stopped early)."""
    for name in (*acc._ROWS, *acc._PER_PUZZLE):
        del getattr(acc, name)[batches:]


@torch.inference_mode()
def run_partial(
    reference: RecursiveReasoner,
    candidates: list[Candidate],
    batches: Iterable[Batch],
    *,
    on_batch: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    numerics: Numerics = "fast",
    compile_steps: bool = False,
    halting: Halting | str | dict[str, Any] | None = None,
    replay: ReferenceTrace | None = None,
    record: ReferenceTrace | None = None,
) -> Partial:
    """The lockstep run without the final reduction: what `merge` combines across shards and `finish` reduces.
    Runs on the reference's device; only per-puzzle values come back to the host."""
    start = time.perf_counter()
    step_of = {id(m): _step_function(m, numerics, compile_steps) for m in [reference, *(c.model for c in candidates)]}
    device = _device_of(reference)
    policy = as_halting(halting)
    if (replay is not None or record is not None) and policy.adaptive:
        raise ValueError("a reference trace (the reference cache) serves fixed halting only")
    n_ref = policy.steps_for(reference.config)
    ref_acc = _Accumulator.from_json(replay.reference) if replay is not None and replay.reference is not None else _Accumulator(n_ref)
    if ref_acc.steps != n_ref:
        raise ValueError(f"replay: a trace of {ref_acc.steps} reference steps for a run of {n_ref}")
    accs = [_Accumulator(policy.steps_for(c.model.config)) for c in candidates]
    # the noise floor depends on the reference alone, so a replayed trace carries it too
    replayed = {i for i, c in enumerate(candidates) if c.role == "noise_floor" and replay is not None and replay.noise_floor is not None}
    for i in replayed:
        accs[i] = _Accumulator.from_json(replay.noise_floor)  # type: ignore[union-attr,arg-type]
    partial = Partial(ref_acc, accs, halting=policy)
    batch_index, completed = -1, 0
    if policy.adaptive:
        partial.adaptive = [new_accumulator(m.config, policy) for m in [reference, *(c.model for c in candidates)]]
    for inputs, ids, labels in batches:
        if should_stop is not None and should_stop():
            break
        batch_index += 1
        if replay is not None and batch_index >= replay.batches:
            raise ValueError(f"replay: the trace holds {replay.batches} batches; the run has more")
        inputs, ids = inputs.to(device), ids.to(device)
        labels = labels.to(device) if labels is not None else None
        partial.labels = partial.labels and labels is not None
        B = inputs.shape[0]
        live = [i for i, a in enumerate(accs) if a.non_finite is None and i not in replayed]
        opened = [*(() if replay is not None else (ref_acc,)), *(accs[i] for i in live)]
        for acc in opened:
            acc.new_row()
        # adaptive halting: each model's deployed (frozen once halted) state on this batch; key -1 is the reference
        tracks: dict[int, HaltTracker] = {}
        if partial.adaptive is not None:
            tracks = {i: HaltTracker(m.config, n, B) for i, m, n in
                      [(-1, reference, n_ref), *((i, candidates[i].model, accs[i].steps) for i in live)]}
            for i in tracks:
                partial.adaptive[i + 1].new_row()
        xs = {i: candidates[i].model.input_embeddings(inputs, ids) for i in live}
        carries: dict[int, Carry] = {i: candidates[i].model.initial_carry(B) for i in live}
        prev_H: dict[int, torch.Tensor] = {}
        last: dict[int, StepOutput] = {}
        # per-puzzle running values of this batch: consecutive cosines (their sum and the last one)
        # and the area under 1 - step fidelity; key -1 is the reference
        consec_sum: dict[int, torch.Tensor] = {}
        consec_last: dict[int, torch.Tensor] = {}
        area: dict[int, torch.Tensor] = {i: torch.zeros(B, dtype=torch.float64, device=device) for i in live}
        ref_x = reference.input_embeddings(inputs, ids) if replay is None else None
        ref_carry = reference.initial_carry(B)
        ref_prev: torch.Tensor | None = None
        ref_out: StepOutput | None = None
        stopped = False
        for t in range(max([n_ref] + [accs[i].steps for i in live])):
            if should_stop is not None and should_stop():
                stopped = True
                break
            if t < n_ref and replay is not None:
                ref_carry = Carry(*replay.state(batch_index, t, device))
            elif t < n_ref:
                ref_out = step_of[id(reference)](ref_carry, ref_x, t)
                ref_carry = ref_out.carry
                if record is not None:
                    record.add_state(batch_index, ref_carry.z_H, ref_carry.z_L)
                if tracks:
                    tracks[-1].observe(t, ref_out)
                if ref_prev is not None:
                    per_puzzle = token_cosine(ref_carry.z_H, ref_prev).mean(-1)
                    ref_acc.consec[-1][t] = float(per_puzzle.sum())
                    ref_acc.consec_count[-1][t] = B
                    consec_sum[-1], consec_last[-1] = consec_sum.get(-1, 0) + per_puzzle, per_puzzle
                ref_prev = ref_carry.z_H
            for i in list(live):
                acc = accs[i]
                if t >= acc.steps:
                    continue
                raw = step_of[id(candidates[i].model)](carries[i], xs[i], t)
                out = _on(raw, device)  # for the metrics; the model gets its own carry back
                problem = _finite_problem(out)
                if problem is not None:
                    acc.non_finite = NonFinite(step=t, tensor=problem[0], puzzles=problem[1])
                    live.remove(i)
                    continue
                carries[i], last[i] = raw.carry, out
                if tracks:  # the reference's deployed state stays frozen after its last step, so t >= n_ref compares too
                    tracks[i].observe(t, out)
                    partial.adaptive[i + 1].observe_step(t, tracks[i], tracks[-1])  # type: ignore[index]
                if t < n_ref:
                    step_fid = token_cosine(out.carry.z_H, ref_carry.z_H).mean(-1)
                    acc.step_fid_H[-1][t] = float(step_fid.sum())
                    acc.step_fid_L[-1][t] = float(token_cosine(out.carry.z_L, ref_carry.z_L).mean(-1).sum())
                    acc.step_count[-1][t] = B
                    area[i] += 1.0 - step_fid
                if i in prev_H:
                    per_puzzle = token_cosine(out.carry.z_H, prev_H[i]).mean(-1)
                    acc.consec[-1][t] = float(per_puzzle.sum())
                    acc.consec_count[-1][t] = B
                    consec_sum[i], consec_last[i] = consec_sum.get(i, 0) + per_puzzle, per_puzzle
                prev_H[i] = out.carry.z_H
        if stopped:
            # Interrupted inside a batch: its rows are incomplete, so the batch is dropped whole.
            for acc in opened:
                for name in _Accumulator._ROWS:
                    getattr(acc, name).pop()
            for i in tracks:
                partial.adaptive[i + 1].drop_row()  # type: ignore[index]
            break
        if replay is not None:
            ref_logits, ref_q_halt = replay.final(batch_index, device)
        else:
            assert ref_out is not None
            ref_logits, ref_q_halt = ref_out.logits, ref_out.q_halt_logits
            if record is not None:
                record.add_final(ref_logits, ref_q_halt)
        ref_preds = ref_logits.argmax(-1)
        ref_halt = ref_q_halt > 0
        if replay is None:
            assert ref_out is not None
            if labels is not None:
                accuracy, exact, valid = per_puzzle_accuracy(ref_preds, labels)
                ref_acc.accuracy.append(_host(accuracy[valid]))
                ref_acc.exact.append(_host(exact[valid].float()))
            _record_trajectory_shape(ref_acc, ref_out, consec_sum.get(-1), consec_last.get(-1), n_ref, B)
        for i in live:
            acc, out = accs[i], last[i]
            acc.fid_H.append(_host(token_cosine(out.carry.z_H, ref_carry.z_H).mean(-1)))
            acc.fid_L.append(_host(token_cosine(out.carry.z_L, ref_carry.z_L).mean(-1)))
            preds = out.logits.argmax(-1)
            same = preds == ref_preds
            acc.answer_equal.append(_host(same.all(-1).float()))
            acc.cell_agreement.append(_host(same.double().mean(-1)))
            acc.logit_kl.append(_host(logit_kl(ref_logits, out.logits)))
            acc.trajectory_area.append(_host(area[i] / max(1, min(acc.steps, n_ref))))
            _record_trajectory_shape(acc, out, consec_sum.get(i), consec_last.get(i), acc.steps, B)
            acc.cell_equal += int(same.sum())
            acc.cells += same.numel()
            acc.halt_equal += int(((out.q_halt_logits > 0) == ref_halt).sum())
            if labels is not None:
                accuracy, exact, valid = per_puzzle_accuracy(preds, labels)
                acc.accuracy.append(_host(accuracy[valid]))
                acc.exact.append(_host(exact[valid].float()))
        if tracks:
            partial.adaptive[0].finish_batch(tracks[-1], None, labels)  # type: ignore[index]
            for i in live:
                partial.adaptive[i + 1].finish_batch(tracks[i], tracks[-1], labels)  # type: ignore[index]
        partial.puzzles += B
        completed += 1
        if on_batch is not None:
            on_batch(B)
    if replay is not None:  # a run stopped early keeps the replayed batches it finished
        for acc in [ref_acc, *(accs[i] for i in replayed)]:
            _truncate(acc, completed)
    if record is not None:
        record.reference = ref_acc.to_json()
        floor = next((i for i, c in enumerate(candidates) if c.role == "noise_floor"), None)
        record.noise_floor = accs[floor].to_json() if floor is not None else None
    partial.seconds = time.perf_counter() - start
    return partial


def _record_trajectory_shape(acc: _Accumulator, out: StepOutput, consec_sum: torch.Tensor | None,
                             consec_last: torch.Tensor | None, steps: int, B: int) -> None:
    """Per-puzzle final q_halt and consecutive similarity (mean over steps, and the last one); a
    single-step model has no consecutive pair, so both are 1 (no change)."""
    acc.q_halt.append(_host(out.q_halt_logits.double()))
    ones = torch.ones(B, dtype=torch.float64)
    acc.consecutive_mean.append(_host(consec_sum / max(1, steps - 1) if consec_sum is not None else ones))
    acc.consecutive_final.append(_host(consec_last if consec_last is not None else ones))


def finish(partial: Partial, candidates: list[Candidate], *, seed: int = 0) -> EvaluationResult:
    """The final reduction of a (merged) partial: the fixed-depth result, then each model's adaptive-halting block."""
    result = _finish_fixed(partial, candidates, seed=seed)
    result.halting, result.max_steps = partial.halting.mode, partial.halting.max_steps
    if partial.adaptive is None:
        return result
    reference = adaptive_result(partial.adaptive[0], None, result.labels)
    result.reference.adaptive = reference
    result.reference.per_puzzle["steps_used"] = per_puzzle_steps(partial.adaptive[0])
    reported = iter(result.candidates)
    for candidate, acc, adaptive in zip(candidates, partial.candidates, partial.adaptive[1:], strict=True):
        # the noise floor (a role other than candidate) is reported apart, in result.noise_floor
        model = next(reported) if candidate.role == "candidate" else result.noise_floor
        if model is None or acc.non_finite is not None:  # a non-finite model has no deployed answer to report
            continue
        model.adaptive = adaptive_result(adaptive, reference, result.labels)
        model.per_puzzle["steps_used"] = per_puzzle_steps(adaptive)
    return result


def _finish_fixed(partial: Partial, candidates: list[Candidate], *, seed: int = 0) -> EvaluationResult:
    """The final reduction of a (merged) partial: curves, means, bootstrap intervals (one RNG, in model order)."""
    if len(candidates) != len(partial.candidates):
        raise ValueError(f"finish: {len(candidates)} candidates for a partial of {len(partial.candidates)}")
    has_labels = partial.labels
    rng = np.random.default_rng(seed)
    ref_arrays = _arrays(partial.reference, signals.REFERENCE_PER_PUZZLE)
    reference_result = _model_result("reference", None, partial.reference, None, has_labels, rng, ref_arrays, None)
    reference_result.settled_puzzles = int(signals.settled(ref_arrays).sum()) if ref_arrays["q_halt"].size else None
    pairs = list(zip(candidates, partial.candidates, strict=True))
    floor = next(((c, a) for c, a in pairs if c.role == "noise_floor"), None)
    floor_result, tau = None, None
    if floor is not None:
        floor_result = _model_result(floor[0].name, floor[0].spec, floor[1], reference_result, has_labels, rng, ref_arrays, None)
        fid = np.asarray(floor_result.per_puzzle.get("fidelity", []))
        tau = signals.tail_tau(fid) if fid.size else None
    results = [_model_result(c.name, c.spec, a, reference_result, has_labels, rng, ref_arrays, tau)
               for c, a in pairs if c.role == "candidate"]
    return EvaluationResult(puzzles=partial.puzzles, labels=has_labels and partial.puzzles > 0, reference=reference_result,
                            candidates=results, seconds=partial.seconds, noise_floor=floor_result, fidelity_tail_tau=tau)


def _mean(chunks: list[np.ndarray]) -> float | None:
    values = np.concatenate(chunks) if chunks else np.zeros(0)
    return float(values.mean()) if values.size else None


# engine accumulator name -> per-puzzle name in results and signals
_PER_PUZZLE_NAMES = {"fid_H": "fidelity", "fid_L": "fidelity_z_L"}


def _arrays(acc: _Accumulator, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    by_name = {_PER_PUZZLE_NAMES.get(k, k): k for k in acc._PER_PUZZLE}
    return {n: np.concatenate(getattr(acc, by_name[n])) if getattr(acc, by_name[n]) else np.zeros(0) for n in names}


def _model_result(
    name: str, spec: CompressionSpec | None, acc: _Accumulator, reference: ModelResult | None, has_labels: bool, rng: np.random.Generator,
    ref_arrays: dict[str, np.ndarray], tau: float | None,
) -> ModelResult:
    consec = _ratio_curve(acc.consec, acc.consec_count, acc.steps)
    valid_consec = [c for c in consec if c is not None]
    result = ModelResult(
        name=name,
        spec=spec.to_dict() if spec is not None else None,
        spec_hash=spec.content_hash if spec is not None else None,
        steps=acc.steps,
        consecutive_similarity=Curve(curve=consec, mean=float(np.mean(valid_consec)) if valid_consec else None),
        non_finite=acc.non_finite,
    )
    if has_labels and acc.non_finite is None:
        result.cell_accuracy, result.puzzle_exact = _mean(acc.accuracy), _mean(acc.exact)
    if reference is None:
        result.per_puzzle = {k: v.tolist() for k, v in ref_arrays.items()}
        if result.puzzle_exact is not None:
            result.per_puzzle["exact"] = np.concatenate(acc.exact).tolist()
        return result
    if acc.non_finite is not None:
        result.notes.append(f"non-finite {acc.non_finite.tensor} at step {acc.non_finite.step}; no fidelity computed")
        return result
    fid_H, fid_L = np.concatenate(acc.fid_H) if acc.fid_H else np.zeros(0), np.concatenate(acc.fid_L) if acc.fid_L else np.zeros(0)
    result.fidelity, result.fidelity_z_L = _summary(fid_H, rng), _summary(fid_L, rng)
    result.step_fidelity = _ratio_curve(acc.step_fid_H, acc.step_count, acc.steps)
    result.step_fidelity_z_L = _ratio_curve(acc.step_fid_L, acc.step_count, acc.steps)
    result.error_growth = _error_growth(result.step_fidelity)
    result.answer_agreement = _mean(acc.answer_equal)
    result.cell_agreement = acc.cell_equal / acc.cells if acc.cells else None
    result.halting_agreement = acc.halt_equal / fid_H.size if fid_H.size else None
    if result.cell_accuracy is not None and reference.cell_accuracy is not None:
        result.delta_cell_accuracy = result.cell_accuracy - reference.cell_accuracy
    if result.puzzle_exact is not None and reference.puzzle_exact is not None:
        result.delta_puzzle_exact = result.puzzle_exact - reference.puzzle_exact
    arrays = _arrays(acc, signals.PER_PUZZLE)
    values = signals.signal_values(arrays, ref_arrays, tau)
    result.settled_agreement, result.logit_kl_mean, result.logit_kl_p95 = (values["settled_agreement"], values["logit_kl_mean"],
                                                                           values["logit_kl_p95"])
    result.fidelity_tail, result.trajectory_area = values["fidelity_tail"], values["trajectory_area"]
    result.late_drift_excess = values["late_drift_excess"]
    result.per_puzzle = {k: v.tolist() for k, v in arrays.items()}
    if result.puzzle_exact is not None:
        result.per_puzzle["exact"] = np.concatenate(acc.exact).tolist()
    return result
