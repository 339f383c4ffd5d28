"""Compression as data: `apply(spec, model) -> new model`, never touching the reference.

The spec's parts are applied in a fixed order (see `spec.py`). Config-level parts (depth,
precision) rebuild the model from the same weights; module-level parts (pruning, the puzzle table,
weight and activation quantisation) work on a private deep copy (sharing only the
puzzle table, which is replaced, never written, when a spec changes it); the carry codec runs between ACT
steps. A spec that does not fit the model raises ValueError naming the spec field.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch

from carrygate.models.compress.activations import quantize_activations_
from carrygate.models.compress.carry import carry_codec
from carrygate.models.compress.half import emulate_half_, emulated
from carrygate.models.compress.noise import add_weight_noise_
from carrygate.models.compress.spec import PRECISION_DTYPES, CompressionSpec, describe
from carrygate.models.compress.structure import compress_puzzle_embedding_, depth_updates, precision_updates, prune_, rebuild
from carrygate.models.reasoner import RecursiveReasoner

__all__ = ["CompressionSpec", "apply", "describe"]


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
    calibration: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> RecursiveReasoner:
    """Build the candidate `spec` describes from the reference `model`.

    Args:
        spec: the candidate compression.
        model: the reference; left unchanged.
        calibration: batches of (inputs, puzzle ids) for activation calibration (needed only when
            `spec.activations` is set).
    Returns:
        A new eval-mode model.
    Raises:
        ValueError: naming the spec field that does not fit the model.
    """
    from carrygate.models.compress.weights import quantize_weights

    candidate = _load_candidate_weights(spec, model) if spec.checkpoint else private_copy(model)
    updates: dict[str, object] = {}
    if spec.depth is not None:
        updates |= depth_updates(spec.depth)
    if spec.precision is not None:
        updates |= precision_updates(spec.precision)
    if updates:
        try:
            candidate = rebuild(candidate, **updates)
        except ValueError as err:
            field = "depth" if spec.depth is not None else "precision"
            raise ValueError(f"{field}: {err}") from err
    if spec.prune is not None:
        prune_(candidate, spec.prune, spec.include, spec.exclude)
    if spec.noise is not None:
        add_weight_noise_(candidate, spec.noise, spec.include, spec.exclude)
    if spec.puzzle_embedding is not None:
        compress_puzzle_embedding_(candidate, spec.puzzle_embedding)
    if spec.precision is not None and emulated(spec.precision):
        # before quantisation: quantised layers keep their own storage
        emulate_half_(candidate, getattr(torch, PRECISION_DTYPES[spec.precision]))
    claimed: list[str] = []  # per-group overrides take their layers first; `weights` covers the rest
    for group in spec.layers:
        try:
            quantize_weights(candidate, group.weights, include=group.include, exclude=[*spec.exclude, *claimed])
        except ValueError as err:
            raise ValueError(f"layers: {err}") from err
        claimed += group.include
    if spec.weights is not None:
        quantize_weights(candidate, spec.weights, include=spec.include, exclude=[*spec.exclude, *claimed])
    if spec.activations is not None:
        if calibration is None:
            raise ValueError("activations: calibration puzzles are required")
        quantize_activations_(candidate, spec.activations, calibration, spec.include, spec.exclude)
    if spec.carry is not None:
        candidate.carry_codec = carry_codec(spec.carry)
    return candidate.eval()
