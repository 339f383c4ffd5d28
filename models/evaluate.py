"""One evaluation, end to end: reference + candidate specs + probe puzzles -> `EvaluationResult`.

This is what `carrygate evaluate` runs in-process and what a worker runs for a job: load nothing
twice, build every candidate from the one reference (`models.compress.apply`), calibrate the ones
that need it on the first probe puzzles, run the lockstep engine, attach footprints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from models.compress import CompressionSpec, apply
from models.footprint import artifact_size, footprint
from models.reasoner import RecursiveReasoner
from models.results import EvaluationResult
from models.tasks.dataset import PuzzleSplit
from models.trajectory import Batch, Candidate, run_lockstep


@dataclass(frozen=True)
class Probe:
    """Probe puzzles as arrays; labels optional."""

    inputs: np.ndarray
    puzzle_identifiers: np.ndarray
    labels: np.ndarray | None = None

    @classmethod
    def from_split(cls, split: PuzzleSplit, limit: int | None = None, labels: bool = True) -> Probe:
        n = len(split) if limit is None else min(limit, len(split))
        return cls(
            np.asarray(split.inputs[:n], dtype=np.int32),
            np.asarray(split.puzzle_identifiers[:n], dtype=np.int32),
            np.asarray(split.labels[:n], dtype=np.int64) if labels else None,
        )

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            labels = torch.from_numpy(self.labels[start:stop]) if self.labels is not None else None
            yield torch.from_numpy(self.inputs[start:stop]), torch.from_numpy(self.puzzle_identifiers[start:stop]), labels


def candidate_name(spec: CompressionSpec, taken: set[str]) -> str:
    name, k = spec.display_name, 2
    while name in taken:
        name, k = f"{spec.display_name}#{k}", k + 1
    taken.add(name)
    return name


def build_candidates(reference: RecursiveReasoner, specs: list[CompressionSpec], probe: Probe, batch_size: int = 64) -> list[Candidate]:
    """Apply every spec; raises ValueError prefixed with the candidate's index and name."""
    taken: set[str] = set()
    candidates = []
    for i, spec in enumerate(specs):
        name = candidate_name(spec, taken)
        calibration = ((x, ids) for x, ids, _ in probe.batches(batch_size))
        try:
            model = apply(spec, reference, calibration=calibration)
        except ValueError as err:
            raise ValueError(f"candidates[{i}] ({name}): {err}") from err
        candidates.append(Candidate(name, model, spec))
    return candidates


def evaluate(
    reference: RecursiveReasoner,
    specs: list[CompressionSpec],
    probe: Probe,
    *,
    batch_size: int = 64,
    on_progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    with_footprint: bool = True,
    compile_steps: bool = False,
) -> EvaluationResult:
    """Evaluate `specs` against `reference` on `probe`. Fidelity needs no labels; accuracy does."""
    candidates = build_candidates(reference, specs, probe, batch_size)
    result = run_lockstep(reference, candidates, probe.batches(batch_size), on_batch=on_progress, should_stop=should_stop,
                          compile_steps=compile_steps)
    if with_footprint:
        result.reference.footprint = footprint(reference, artifact_size(reference))
        for candidate, model_result in zip(candidates, result.candidates, strict=True):
            model_result.footprint = footprint(candidate.model, artifact_size(candidate.model))
            if candidate.model.emulated_fp16:
                model_result.notes.append("fp16 emulated on CPU (fp16 rounding, fp32 accumulation)")
    return result
