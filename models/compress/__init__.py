"""Compression as data: `apply(spec, model) -> CompressedCandidate`, never touching the reference.

Modelled on torchao's `quantize_(model, config)`: each part of a spec is a config object, and a
registry (`APPLIERS`) maps its type to the function that applies it. `parts(spec)` lists a spec's
parts in the fixed order `spec.py` documents; `apply` starts from a private copy of the reference
(or the spec's checkpoint) and threads a `_Draft` through the appliers, then freezes it into a
`CompressedCandidate` (`candidate.py`): the model plus the state the tensors do not show (carry
codec, deployed storage, per-step quantisers, an ONNX Runtime artifact).

Config-level parts (depth, precision) rebuild the model from the same weights; module-level parts
(pruning, noise, the puzzle table, weight and activation quantisation) work on the private deep copy
(sharing only the puzzle table, which is replaced, never written, when a spec changes it); the carry
codec runs between ACT steps. A spec that does not fit the model raises ValueError naming the spec field.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from carrygate.models.compress.activations import quantize_activations_
from carrygate.models.compress.candidate import CompressedCandidate, StepAware, Storage
from carrygate.models.compress.carry import CarryCodec, carry_codec
from carrygate.models.compress.half import emulate_half_, emulated
from carrygate.models.compress.noise import add_weight_noise_
from carrygate.models.compress.spec import (
    PRECISION_DTYPES,
    ActivationSpec,
    BnbFourBitWeights,
    CarrySpec,
    CompressionSpec,
    DepthSpec,
    Int4Weights,
    Int8BnbWeights,
    Int8ChannelWeights,
    Int8DynamicWeights,
    IntWeights,
    LayerWeights,
    NoiseSpec,
    OnnxRuntimeSpec,
    PruneSpec,
    PuzzleEmbeddingSpec,
    describe,
)
from carrygate.models.compress.structure import compress_puzzle_embedding_, depth_updates, precision_updates, prune_, rebuild
from carrygate.models.reasoner import RecursiveReasoner

__all__ = ["APPLIERS", "CompressedCandidate", "CompressionSpec", "Storage", "apply", "describe", "parts"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


# -- the parts that are not a spec field's own pydantic class -----------------------------------
@dataclass(frozen=True)
class ConfigPart:
    """`depth` and `precision` together: one rebuild of the model under the changed config."""

    depth: DepthSpec | None
    precision: str | None


@dataclass(frozen=True)
class HalfEmulation:
    """A half `precision` this CPU has no fast path for (`half.py`): fp32 compute, half rounding."""

    dtype: torch.dtype


@dataclass(frozen=True)
class _Draft:
    """What the appliers thread through: the candidate being built. Its model is the private copy,
    which module-level appliers change in place; everything else is replaced, never mutated."""

    model: RecursiveReasoner
    carry_codec: CarryCodec | None = None
    storage: Storage = Storage()
    step_aware: tuple[StepAware, ...] = ()
    notes: tuple[str, ...] = ()
    claimed: tuple[str, ...] = ()  # layer globs the per-group `layers` took first; `weights` covers the rest
    built: CompressedCandidate | None = None  # set by the onnxruntime part: the candidate over the file


@dataclass(frozen=True)
class _Context:
    """What an applier may need besides its part: the whole spec (include/exclude) and the inputs."""

    spec: CompressionSpec
    calibration: Batches | None
    artifact_dir: Path | None
    name: str
    threads: int


Applier = Callable[[Any, _Draft, _Context], _Draft]
APPLIERS: dict[type, Applier] = {}


def applies_to(*kinds: type) -> Callable[[Applier], Applier]:
    """Register the decorated function as the applier of parts of these types."""
    def register(fn: Applier) -> Applier:
        for kind in kinds:
            APPLIERS[kind] = fn
        return fn
    return register


def parts(spec: CompressionSpec) -> Iterator[object]:
    """`spec`'s parts in the order they are applied (`spec.py`, module docstring)."""
    if spec.depth is not None or spec.precision is not None:
        yield ConfigPart(spec.depth, spec.precision)
    yield from (p for p in (spec.prune, spec.noise, spec.puzzle_embedding) if p is not None)
    if spec.precision is not None and emulated(spec.precision):
        # before quantisation: quantised layers keep their own storage
        yield HalfEmulation(getattr(torch, PRECISION_DTYPES[spec.precision]))
    yield from spec.layers  # per-group overrides take their layers first
    yield from (p for p in (spec.weights, spec.activations, spec.carry, spec.onnxruntime) if p is not None)


# -- the appliers ------------------------------------------------------------------------------
@applies_to(ConfigPart)
def _config(part: ConfigPart, draft: _Draft, _ctx: _Context) -> _Draft:
    updates: dict[str, object] = {}
    if part.depth is not None:
        updates |= depth_updates(part.depth)
    if part.precision is not None:
        updates |= precision_updates(part.precision)
    try:
        return replace(draft, model=rebuild(draft.model, **updates))
    except ValueError as err:
        field = "depth" if part.depth is not None else "precision"
        raise ValueError(f"{field}: {err}") from err


@applies_to(PruneSpec)
def _prune(part: PruneSpec, draft: _Draft, ctx: _Context) -> _Draft:
    prune_(draft.model, part, ctx.spec.include, ctx.spec.exclude)
    return draft


@applies_to(NoiseSpec)
def _noise(part: NoiseSpec, draft: _Draft, ctx: _Context) -> _Draft:
    add_weight_noise_(draft.model, part, ctx.spec.include, ctx.spec.exclude)
    return draft


@applies_to(PuzzleEmbeddingSpec)
def _puzzle_table(part: PuzzleEmbeddingSpec, draft: _Draft, _ctx: _Context) -> _Draft:
    table_bytes, streamed = compress_puzzle_embedding_(draft.model, part)
    return replace(draft, storage=replace(draft.storage, puzzle_table_bytes=table_bytes, puzzle_rows_streamed=streamed))


@applies_to(HalfEmulation)
def _half(part: HalfEmulation, draft: _Draft, _ctx: _Context) -> _Draft:
    emulate_half_(draft.model, part.dtype)
    note = f"{part.dtype} emulated on CPU (half rounding, fp32 accumulation)"
    return replace(draft, storage=replace(draft.storage, half=part.dtype), notes=(*draft.notes, note))


@applies_to(LayerWeights)
def _layer_group(part: LayerWeights, draft: _Draft, ctx: _Context) -> _Draft:
    from carrygate.models.compress.weights import quantize_weights

    try:
        quantize_weights(draft.model, part.weights, include=part.include, exclude=[*ctx.spec.exclude, *draft.claimed])
    except ValueError as err:
        raise ValueError(f"layers: {err}") from err
    return replace(draft, claimed=(*draft.claimed, *part.include))


@applies_to(Int8BnbWeights, Int8ChannelWeights, Int8DynamicWeights, IntWeights, Int4Weights, BnbFourBitWeights)
def _weights(part: Any, draft: _Draft, ctx: _Context) -> _Draft:
    from carrygate.models.compress.weights import quantize_weights

    quantize_weights(draft.model, part, include=ctx.spec.include, exclude=[*ctx.spec.exclude, *draft.claimed])
    return draft


@applies_to(ActivationSpec)
def _activations(part: ActivationSpec, draft: _Draft, ctx: _Context) -> _Draft:
    if ctx.calibration is None:
        raise ValueError("activations: calibration puzzles are required")
    quantisers = quantize_activations_(draft.model, part, ctx.calibration, ctx.spec.include, ctx.spec.exclude)
    return replace(draft, step_aware=(*draft.step_aware, quantisers))


@applies_to(CarrySpec)
def _carry(part: CarrySpec, draft: _Draft, _ctx: _Context) -> _Draft:
    return replace(draft, carry_codec=carry_codec(part))


@applies_to(OnnxRuntimeSpec)
def _onnxruntime(part: OnnxRuntimeSpec, draft: _Draft, ctx: _Context) -> _Draft:
    """Last: export the PyTorch candidate built so far, quantise the file with ORT, step that file."""
    import tempfile

    from carrygate.models.compress.ort import build_ort_candidate

    if ctx.calibration is None:
        raise ValueError("onnxruntime: probe puzzles are required (calibration) to check the export on")
    artifact_dir = ctx.artifact_dir or Path(tempfile.mkdtemp(prefix="carrygate-artifacts-"))
    built = build_ort_candidate(part, _freeze(replace(draft, model=draft.model.eval())), artifact_dir, ctx.name, ctx.calibration,
                                threads=ctx.threads)
    return replace(draft, built=built)


def _freeze(draft: _Draft) -> CompressedCandidate:
    if draft.built is not None:
        return draft.built
    return CompressedCandidate(model=draft.model, carry_codec=draft.carry_codec, storage=draft.storage, notes=draft.notes,
                               step_aware=draft.step_aware)


# -- apply -------------------------------------------------------------------------------------
def private_copy(model: RecursiveReasoner) -> RecursiveReasoner:
    """A deep copy that shares the puzzle-embedding table with `model`.

    The table is the bulk of an ARC checkpoint (GBs), and K candidates must not hold K copies of
    it. Every compression step that changes the table assigns a new tensor, never writes in place.
    """
    memo: dict[int, object] = {}
    if model.puzzle_emb is not None:
        memo[id(model.puzzle_emb.weights)] = model.puzzle_emb.weights
    return copy.deepcopy(model, memo)


def _load_candidate_weights(spec: CompressionSpec, reference: RecursiveReasoner) -> RecursiveReasoner:
    from carrygate.models.checkpoint import CheckpointError, load_checkpoint, load_state_into

    assert spec.checkpoint is not None
    try:
        candidate = load_checkpoint(spec.checkpoint, seq_len=reference.config.seq_len).model
    except CheckpointError as err:
        raise ValueError(f"checkpoint: {err}") from err
    model = private_copy(reference)
    try:
        load_state_into(model, candidate.state_dict(), spec.checkpoint)
    except CheckpointError as err:
        raise ValueError(f"checkpoint: not the reference's architecture: {err}") from err
    return model


@torch.no_grad()
def apply(
    spec: CompressionSpec,
    model: RecursiveReasoner,
    *,
    calibration: Batches | None = None,
    artifact_dir: Path | None = None,
    name: str | None = None,
    threads: int = 1,
) -> CompressedCandidate:
    """Build the candidate `spec` describes from the reference `model`.

    Args:
        spec: the candidate compression.
        model: the reference; left unchanged.
        calibration: batches of (inputs, puzzle ids) for activation calibration, and for an
            `onnxruntime` spec the probe puzzles its export is checked (and statically calibrated) on.
            Needed only for those two parts.
        artifact_dir: where an `onnxruntime` spec's files go (a fresh temporary folder if None).
        name: the candidate's name, which names those files (default: the spec's display name).
        threads: ONNX Runtime intra-op threads of an `onnxruntime` candidate's session.
    Returns:
        A new candidate; its model is in eval mode.
    Raises:
        ValueError: naming the spec field that does not fit the model.
    """
    start = _load_candidate_weights(spec, model) if spec.checkpoint else private_copy(model)
    ctx = _Context(spec, calibration, artifact_dir, name or spec.display_name, threads)
    draft = _Draft(model=start)
    for part in parts(spec):
        draft = APPLIERS[type(part)](part, draft, ctx)
    draft.model.eval()
    return _freeze(draft)
