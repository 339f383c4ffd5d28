"""Structural compression: depth overrides, precision, structured pruning, the puzzle-embedding table.

Each function mutates the model it is given; `models.compress.apply` hands them a private copy.
"""

from __future__ import annotations

import torch

from carrygate.models import build_model
from carrygate.models.compress.half import emulated
from carrygate.models.compress.scope import select_linears
from carrygate.models.compress.spec import PRECISION_DTYPES, DepthSpec, PruneSpec, PuzzleEmbeddingSpec
from carrygate.models.layers import Attention, SwiGLU
from carrygate.models.reasoner import RecursiveReasoner


def rebuild(model: RecursiveReasoner, **updates: object) -> RecursiveReasoner:
    """The same weights under a changed config (depth, forward dtype). Validates the new config."""
    from carrygate.models.checkpoint import load_state_into

    config = type(model.config).model_validate(model.config.model_dump() | updates)
    new = build_model(config)
    load_state_into(new, model.state_dict(), "reference")
    return new


def depth_updates(spec: DepthSpec) -> dict[str, int]:
    return spec.model_dump(exclude_none=True)


def precision_updates(precision: str) -> dict[str, str]:
    # An emulated half precision (see half.py) computes in fp32 with half rounding.
    return {"forward_dtype": "float32" if emulated(precision) else PRECISION_DTYPES[precision]}


def _zero_lowest(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean mask of the units to remove: the round(sparsity * n) lowest scores."""
    k = int(round(sparsity * scores.numel()))
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k:
        mask[scores.argsort()[:k]] = True
    return mask


@torch.no_grad()
def prune_(model: RecursiveReasoner, spec: PruneSpec, include: list[str], exclude: list[str]) -> dict[str, int]:
    """Structured magnitude pruning. Removed units are zeroed (numerically the same as cutting them
    out); the footprint counts them as removed. Returns units removed per module."""
    removed: dict[str, int] = {}
    if spec.structure == "intermediate":
        for name, module in model.named_modules():
            if isinstance(module, SwiGLU) and select_linears(model, include, exclude, within=name):
                gate, up = module.gate_up_proj.weight.chunk(2, dim=0)
                down = module.down_proj.weight
                score = gate.norm(dim=1) * up.norm(dim=1) * down.norm(dim=0)  # each unit's path through the MLP
                mask = _zero_lowest(score, spec.sparsity)
                inter = gate.shape[0]
                module.gate_up_proj.weight[:inter][mask] = 0
                module.gate_up_proj.weight[inter:][mask] = 0
                module.down_proj.weight[:, mask] = 0
                removed[name] = int(mask.sum())
    elif spec.structure == "heads":
        for name, module in model.named_modules():
            if isinstance(module, Attention) and select_linears(model, include, exclude, within=name):
                H, hd = module.num_heads, module.head_dim
                qkv = module.qkv_proj.weight.view(3, H, hd, -1)  # rows: [Q | K | V], each head contiguous
                o = module.o_proj.weight.view(-1, H, hd)  # (D, H, hd): input columns grouped by head
                score = qkv.pow(2).sum(dim=(0, 2, 3)).sqrt() * o.pow(2).sum(dim=(0, 2)).sqrt()
                mask = _zero_lowest(score, spec.sparsity)
                qkv[:, mask] = 0
                o[:, mask] = 0
                removed[name] = int(mask.sum())
        if not removed:
            raise ValueError("prune.structure: 'heads' needs attention layers; this model has none in scope (mlp_t?)")
    else:  # output channels of every selected Linear
        for name, module in select_linears(model, include, exclude).items():
            mask = _zero_lowest(module.weight.norm(dim=1), spec.sparsity)
            module.weight[mask] = 0
            if module.bias is not None:
                module.bias[mask] = 0
            removed[name] = int(mask.sum())
    if not removed:
        raise ValueError("prune: include/exclude matched no prunable module")
    return removed


@torch.no_grad()
def compress_puzzle_embedding_(model: RecursiveReasoner, spec: PuzzleEmbeddingSpec) -> tuple[int | None, bool]:
    """INT8 per-row symmetric or SVD rank-k table; flash-row leaves the values exact.

    Returns what the deployed bytes are and the tensors do not show: the compressed table's bytes
    (None: as its tensor) and whether only the current puzzle's row is streamed from flash."""
    if model.puzzle_emb is None:
        raise ValueError("puzzle_embedding: this model has no puzzle-embedding table")
    table = model.puzzle_emb.weights
    rows, dim = table.shape
    if spec.method == "int8":
        scale = table.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
        model.puzzle_emb.weights = torch.round(table / scale).clamp(-127, 127) * scale  # new tensor: the table may be shared
        stored: int | None = rows * dim + 4 * rows
    elif spec.method == "svd":
        assert spec.rank is not None
        if spec.rank >= min(rows, dim):
            raise ValueError(f"puzzle_embedding.rank: {spec.rank} is not below the table's rank bound {min(rows, dim)}")
        U, S, Vh = torch.linalg.svd(table.double(), full_matrices=False)
        k = spec.rank
        model.puzzle_emb.weights = ((U[:, :k] * S[:k]) @ Vh[:k]).to(table.dtype)
        stored = 4 * k * (rows + dim)
    else:  # flash_row: the table as it is
        stored = None
    return stored, spec.method == "flash_row"

