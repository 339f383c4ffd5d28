"""One evaluation, end to end: reference + candidate specs + probe puzzles -> `EvaluationResult`.

This is what `carrygate evaluate` runs in-process and what a worker runs for a job: load nothing
twice, build every candidate from the one reference (`models.compress.apply`), calibrate the ones
that need it on the first probe puzzles, run the lockstep engine, attach footprints.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from carrygate.models.compress import CompressedCandidate, CompressionSpec, apply
from carrygate.models.drop_model import DropCalibration, default_calibration, predict_drops
from carrygate.models.fast import compile_pays
from carrygate.models.footprint import artifact_size, flops_per_step, footprint
from carrygate.models.halting import Halting, as_halting, attach_executed_gflops
from carrygate.models.reasoner import RecursiveReasoner
from carrygate.models.reference_cache import ReferenceCache, ReferenceTrace, model_digest, trace_key
from carrygate.models.results import EvaluationResult
from carrygate.models.tasks.dataset import PuzzleSplit
from carrygate.models.trajectory import Batch, Candidate, run_lockstep
from carrygate.models.vocabulary import Numerics


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

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        """Batches of puzzles [start, stop); a shard's range starts on a batch boundary, so its batches are the single run's."""
        end = len(self) if stop is None else min(stop, len(self))
        for first in range(start, end, batch_size):
            last = min(first + batch_size, end)
            labels = torch.from_numpy(self.labels[first:last]) if self.labels is not None else None
            yield torch.from_numpy(self.inputs[first:last]), torch.from_numpy(self.puzzle_identifiers[first:last]), labels


def candidate_name(spec: CompressionSpec, taken: set[str]) -> str:
    name, k = spec.display_name, 2
    while name in taken:
        name, k = f"{spec.display_name}#{k}", k + 1
    taken.add(name)
    return name


def noise_floor(reference: RecursiveReasoner) -> Candidate:
    """The reference under a harmless perturbation: bf16 for a float32 reference, float32 for a
    half-precision one. Its per-puzzle fidelity spread is the job's floor for `fidelity_tail`."""
    precision = "fp32" if reference.dtype in (torch.bfloat16, torch.float16) else "bf16"
    spec = CompressionSpec(name=f"noise-floor-{precision}", precision=precision)
    return Candidate(spec.display_name, apply(spec, reference), spec, role="noise_floor")


def build_candidates(reference: RecursiveReasoner, specs: list[CompressionSpec], probe: Probe, batch_size: int = 64,
                     artifact_dir: Path | None = None, *, with_noise_floor: bool = True) -> list[Candidate]:
    """Apply every spec; raises ValueError prefixed with the candidate's index and name.

    An `onnxruntime` spec becomes a candidate over the exported (and ORT-quantised) file, written
    to `artifact_dir` (one fresh temporary folder for the job if None); `apply` builds it, and the
    candidate carries its `artifact` and `float_model`.
    The noise floor (`noise_floor`) comes last, so candidate i is still `specs[i]`."""
    taken: set[str] = set()
    candidates = []
    for i, spec in enumerate(specs):
        name = candidate_name(spec, taken)
        calibration = ((x, ids) for x, ids, _ in probe.batches(batch_size))
        if spec.onnxruntime is not None:  # one folder for every file of the job
            artifact_dir = artifact_dir or Path(tempfile.mkdtemp(prefix="carrygate-artifacts-"))
        try:
            model = apply(spec, reference, calibration=calibration, artifact_dir=artifact_dir, name=name)
        except ValueError as err:
            raise ValueError(f"candidates[{i}] ({name}): {err}") from err
        candidates.append(Candidate(name, model, spec))
    if with_noise_floor and specs:
        candidates.append(noise_floor(reference))
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
    numerics: Numerics = "fast",
    compile_steps: bool | None = None,
    artifact_dir: Path | None = None,
    profile_threads: int = 1,
    halting: Halting | str | dict[str, Any] | None = None,
    calibration: DropCalibration | None = None,
    reference_cache: ReferenceCache | None = None,
) -> EvaluationResult:
    """Evaluate `specs` against `reference` on `probe`, on the reference's device. Fidelity needs no
    labels; accuracy does. `onnxruntime` candidates write their file to `artifact_dir` and are profiled
    with ORT on this CPU. `calibration` predicts each candidate's puzzle-exact drop (default: the one
    shipped with carrygate). `compile_steps` None compiles fast numerics when the job is large enough
    to pay for it. With a `reference_cache` (fixed halting), a reference run before on the same
    weights, probe and settings is replayed instead of recomputed, and a new one is stored."""
    candidates = build_candidates(reference, specs, probe, batch_size, artifact_dir)
    compile_steps = decide_compile(reference, len(candidates), len(probe), numerics, compile_steps)
    policy = as_halting(halting)
    key, replay, record = None, None, None
    if reference_cache is not None and not policy.adaptive:
        floor = next((c for c in candidates if c.role == "noise_floor"), None)
        steps = policy.steps_for(reference.config)
        key = trace_key(model_digest(reference, reference.config), probe.inputs, probe.puzzle_identifiers, probe.labels,
                        batch_size=batch_size, steps=steps, numerics=numerics, compiled=compile_steps, device=reference.device.type,
                        noise_floor=floor.spec.content_hash if floor is not None and floor.spec is not None else None)
        replay = reference_cache.get(key)
        record = ReferenceTrace(steps, limit=reference_cache.max_entry_bytes) if replay is None else None
    result = run_lockstep(reference, candidates, probe.batches(batch_size), on_batch=on_progress, should_stop=should_stop,
                          numerics=numerics, compile_steps=compile_steps, halting=policy, replay=replay, record=record)
    result.numerics, result.compiled = numerics, compile_steps if numerics == "fast" else False
    if reference_cache is not None and key is not None:
        result.reference_cached = replay is not None
        if record is not None and result.puzzles == len(probe):
            reference_cache.put(key, record)
    measure(result, reference, candidates, probe, with_footprint=with_footprint, profile_threads=profile_threads,
            calibration=calibration)
    return result


def decide_compile(reference: RecursiveReasoner, models: int, puzzles: int, numerics: Numerics, compile_steps: bool | None) -> bool:
    """Whether a job's steps run compiled: as asked, else fast numerics on a job whose eager work (the
    reference plus `models` candidates at its depth over `puzzles`) pays for the compilation. A sharded
    job decides from the whole probe, so its shards round like the unsharded run."""
    if compile_steps is not None:
        return compile_steps
    gflop = (1 + models) * puzzles * reference.config.halt_max_steps * flops_per_step(reference.config) / 1e9
    return numerics == "fast" and compile_pays(gflop)


def measure(result: EvaluationResult, reference: RecursiveReasoner, candidates: list[Candidate], probe: Probe, *,
            with_footprint: bool = True, profile_threads: int = 1, calibration: DropCalibration | None = None) -> None:
    """Attach what is measured on the models rather than along the trajectories: ORT artifacts and
    profiles, footprints, predicted puzzle-exact drops (in place; shared by a single run and the
    reduction of a sharded one)."""
    predict_drops(result, calibration or default_calibration())
    candidates = [c for c in candidates if c.role == "candidate"]
    for candidate, model_result in zip(candidates, result.candidates, strict=True):
        built = _compressed(candidate)
        if built is None or built.artifact is None:
            continue
        model_result.artifact = built.artifact
        repeats = candidate.spec.onnxruntime.profile_repeats if candidate.spec and candidate.spec.onnxruntime else 0
        if repeats and len(probe) and model_result.non_finite is None:
            from carrygate.models.compress.ort_profile import profile_runner
            from carrygate.models.export import OrtReasoner

            assert isinstance(built.model, OrtReasoner)
            model_result.profile = profile_runner(built.model, probe.inputs[:repeats], probe.puzzle_identifiers[:repeats],
                                                  repeats=repeats, threads=profile_threads)
    if with_footprint:
        result.reference.footprint = footprint(reference, artifact_size(reference))
        for candidate, model_result in zip(candidates, result.candidates, strict=True):
            built = _compressed(candidate)
            if built is None:  # a bare model passed in as a candidate
                assert isinstance(candidate.model, RecursiveReasoner), f"{candidate.name}: no footprint of a {type(candidate.model)}"
                model_result.footprint = footprint(candidate.model, artifact_size(candidate.model))
                continue
            if built.artifact is not None:  # an ORT file: analytic footprint of its float model, bytes of the file
                model_result.footprint = footprint(built, built.artifact.bytes)
                model_result.footprint.notes.append("onnxruntime artifact: artifact_bytes is the .onnx file; the other bytes are analytic")
                continue
            model_result.footprint = footprint(built, artifact_size(built))
            model_result.notes.extend(built.notes)  # what apply says about the candidate (an emulated half precision)
    attach_executed_gflops([result.reference, *result.candidates])


def _compressed(candidate: Candidate) -> CompressedCandidate | None:
    """The `CompressedCandidate` a candidate runs (None for the search's replayed and from-step models,
    which are measurements, not built artifacts)."""
    return candidate.model if isinstance(candidate.model, CompressedCandidate) else None
