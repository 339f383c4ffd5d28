"""Analytic cost of a reasoner: FLOPs per ACT step and per puzzle (TRM_FACTS §8).

2 FLOPs per multiply-accumulate, T = seq_len + P tokens, width D, SwiGLU intermediate I:
- attention block: 2T(4D^2 + 3DI) + 4T^2 D   (qkv, o, gate_up, down; QK^T and AV)
- mlp_t block:     2D(3 T I_t) + 2T(3 D I)   (no T^2 term)
- per ACT step: TRM H(L+1) L_layers blocks; HRM H L L_layers + H H_layers blocks;
  plus the lm_head on all T positions (2 T D V) and the q_head (4D).

Bytes are counted as deployed: float weights at the forward precision, quantised layers at their
own storage (codes + scales + zero points), structurally pruned rows/columns removed. What the
tensors do not show (an emulated half precision, a compressed puzzle table, the carry codec) comes
from the `CompressedCandidate` that `models.compress.apply` built; a bare model is the reference.
"""

from __future__ import annotations

import io
import math

import torch
from torch import nn

from carrygate.models.compress.candidate import CompressedCandidate, Storage
from carrygate.models.config import HRMConfig, TRMConfig, swiglu_intermediate
from carrygate.models.layers import CastedEmbedding
from carrygate.models.reasoner import RecursiveReasoner
from carrygate.models.results import Footprint


def block_flops(config: TRMConfig | HRMConfig, mlp_t: bool, include_attention_scores: bool = True) -> int:
    T, D = config.total_len, config.hidden_size
    channel_mlp = 2 * T * 3 * D * swiglu_intermediate(D, config.expansion)
    if mlp_t:
        return 2 * D * 3 * T * swiglu_intermediate(T, config.expansion) + channel_mlp
    attention = 2 * T * 4 * D * D + (4 * T * T * D if include_attention_scores else 0)
    return attention + channel_mlp


def blocks_per_step(config: TRMConfig | HRMConfig) -> int:
    if isinstance(config, HRMConfig):
        return config.H_cycles * config.L_cycles * config.L_layers + config.H_cycles * config.H_layers
    return config.H_cycles * (config.L_cycles + 1) * config.L_layers


def flops_per_step(config: TRMConfig | HRMConfig, include_attention_scores: bool = True) -> int:
    """FLOPs of one ACT step for one example."""
    mlp_t = isinstance(config, TRMConfig) and config.mlp_t
    heads = 2 * config.total_len * config.hidden_size * config.vocab_size + 4 * config.hidden_size
    return blocks_per_step(config) * block_flops(config, mlp_t, include_attention_scores) + heads


def flops_per_puzzle(config: TRMConfig | HRMConfig, include_attention_scores: bool = True) -> int:
    """FLOPs of a full evaluation (halt_max_steps ACT steps; evaluation never halts early)."""
    return config.halt_max_steps * flops_per_step(config, include_attention_scores)


# -- bytes and SRAM --------------------------------------------------------------------------------
MB = 1024 * 1024
SRAM_BUDGETS = {"8mb": 8 * MB, "4mb": 4 * MB}


Measured = RecursiveReasoner | CompressedCandidate  # a bare model (the reference) or a built candidate


def _unpack(model: Measured) -> tuple[RecursiveReasoner, Storage, CompressedCandidate | None]:
    """(the PyTorch model whose tensors are counted, its storage facts, the candidate if any). An ORT
    candidate is counted through the float model its file was built from."""
    if isinstance(model, CompressedCandidate):
        return model.source_model, model.storage, model
    return model, Storage(), None


def _deployed_itemsize(model: RecursiveReasoner, storage: Storage) -> int:
    """Bytes per float weight as deployed: the forward dtype (fp32 masters are a training artefact)."""
    return 2 if storage.half is not None else torch.finfo(model.dtype).bits // 8


def _dense_bytes(weight: torch.Tensor, itemsize: int) -> int:
    """Structured pruning zeroes whole rows/columns; a deployed matrix drops them."""
    if weight.dim() != 2:
        return weight.numel() * itemsize
    rows = int((weight != 0).any(dim=1).sum())
    cols = int((weight != 0).any(dim=0).sum())
    return rows * cols * itemsize


def tensor_bytes(measured: Measured) -> dict[str, int]:
    """Bytes of every stored tensor group as deployed (quantised layers report their own storage)."""
    model, storage, _ = _unpack(measured)
    itemsize = _deployed_itemsize(model, storage)
    out: dict[str, int] = {}
    counted: list[str] = []  # modules that report their own storage; their children are inside it
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in counted):
            continue
        own_storage = getattr(module, "storage_bytes", None)  # a quantised layer's class API
        if callable(own_storage):
            counted.append(name)
            out[name] = int(own_storage())
        elif isinstance(module, nn.Linear):
            out[name] = _dense_bytes(module.weight, itemsize) + (module.bias.numel() * itemsize if module.bias is not None else 0)
        elif isinstance(module, CastedEmbedding):
            out[name] = module.embedding_weight.numel() * itemsize
    out["H_init"] = out["L_init"] = model.config.hidden_size * itemsize
    if model.puzzle_emb is not None:
        table = model.puzzle_emb
        out["puzzle_emb"] = storage.puzzle_table_bytes if storage.puzzle_table_bytes is not None else table.weights.numel() * itemsize
    return out


def _activation_bytes(config: TRMConfig | HRMConfig, itemsize: int) -> tuple[int, int]:
    """(working set of the largest block, activations of every block application in one step)."""
    T, D = config.total_len, config.hidden_size
    inter = swiglu_intermediate(D, config.expansion)
    mlp = T * (2 * inter + inter + D)  # gate_up output, silu(gate)*up, down output
    mixer = 0
    if isinstance(config, TRMConfig) and config.mlp_t:
        inter_t = swiglu_intermediate(T, config.expansion)
        mixer = D * (2 * inter_t + inter_t + T)
    else:
        mixer = T * (3 * D + D) + config.num_heads * T * T  # qkv, output, attention scores
    block = max(mlp, mixer) + 2 * T * D  # plus the block input and residual
    return block * itemsize, blocks_per_step(config) * (mlp + mixer + 2 * T * D) * itemsize


def footprint(measured: Measured, artifact_bytes: int | None = None) -> Footprint:
    """Bytes, SRAM peaks and FLOPs of the reference model or a compressed candidate, batch 1.

    SRAM model (paper App. M, made explicit): *streaming* holds the backbone weights, one puzzle row
    (single-puzzle flash loading), the carry, the input embedding and the working set of one block;
    *full load* holds the backbone, the whole puzzle table, the carry, the input embedding and the
    activations of every block application of an ACT step (a graph executor without buffer reuse).
    """
    model, storage, candidate = _unpack(measured)
    codec = candidate.carry_codec if candidate is not None else None
    config = model.config
    per_tensor = tensor_bytes(measured)
    table = per_tensor.get("puzzle_emb", 0)
    backbone = sum(v for k, v in per_tensor.items() if k != "puzzle_emb")
    act_itemsize = _deployed_itemsize(model, storage)
    T, D = config.total_len, config.hidden_size
    carry = 2 * T * D * act_itemsize
    notes = []
    if codec is not None:
        carry = 2 * T * (math.ceil(D * codec.bits / 8) + 4)  # bit-packed codes + one fp32 scale per token, per state
        notes.append(f"carry stored as INT{codec.bits} per token between steps")
    if storage.half is not None:
        notes.append(f"{storage.half} emulated on CPU: half storage, fp32 accumulation")
    row = model.puzzle_emb.weights.shape[1] * _deployed_itemsize(model, storage) if model.puzzle_emb is not None else 0
    working, all_steps = _activation_bytes(config, act_itemsize)
    x = T * D * act_itemsize
    streaming = backbone + row + carry + x + working
    full = backbone + table + carry + x + all_steps
    return Footprint(
        backbone_bytes=backbone,
        embedding_table_bytes=table,
        total_bytes=backbone + table,
        carry_bytes_per_puzzle=carry,
        sram_streaming_bytes=streaming,
        sram_full_load_bytes=full,
        fits_8mb=streaming <= SRAM_BUDGETS["8mb"],
        fits_4mb=streaming <= SRAM_BUDGETS["4mb"],
        gflops_per_step=flops_per_step(config) / 1e9,
        gflops_per_puzzle=flops_per_puzzle(config) / 1e9,
        artifact_bytes=artifact_bytes,
        per_tensor=per_tensor,
        notes=notes,
    )


def artifact_size(measured: Measured) -> int:
    """Bytes of the serialised candidate: its state_dict with float weights at the deployed precision."""
    model, storage, _ = _unpack(measured)
    dtype = storage.half or model.dtype
    state = {k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.dtype == torch.float32 else v) for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.tell()
