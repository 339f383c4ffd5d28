"""Half precision on a CPU, emulated where the CPU has no fast path for it.

fp16 matmuls run at 0.3-2.5 GFLOP/s on x86 CPUs, ~100x slower than fp32; bf16 runs fast only where
the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX). On an AVX2-only CPU a bf16 matmul
runs at about 0.01x fp32 (`python bench/half_matmul.py`), so a bf16 candidate or the bf16
noise floor would dominate every job. Such a precision is emulated: it rounds to the half dtype
wherever a native half model stores a tensor, and computes in fp32 in between, which is the semantics
of half GEMMs with fp32 accumulation (tensor cores, most NPUs, oneDNN's bf16 kernels):
- weights (Linear, token and position embeddings, and for fp16 the puzzle table) rounded once;
- every Linear's input and output, every block's output (the carry) rounded on the fly;
- fp16 overflow past 65504 becomes inf, as in fp16.
Not rounded: the elementwise ops inside SwiGLU and the residual adds before each RMSNorm (which
upcasts to fp32 anyway). Results from this path say "<dtype> emulated on CPU".
"""

from __future__ import annotations

import platform
from functools import lru_cache, partial
from pathlib import Path

import torch
from torch import nn

from carrygate.models.layers import CastedEmbedding, ReasoningBlock
from carrygate.models.reasoner import RecursiveReasoner

_NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (x86: AVX512-BF16 or AMX; other CPUs: assumed)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return True  # no way to tell: keep the native path
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return bool(_NATIVE_BF16_FLAGS & set(line.split(":", 1)[1].split()))
    return True


def emulated(precision: str) -> bool:
    """Whether `precision` ("fp16", "bf16", ...) runs emulated in fp32 on this machine."""
    return precision == "fp16" or (precision == "bf16" and not native_bf16())


def round_to(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.to(dtype).to(t.dtype)


def _round_output(dtype: torch.dtype, _module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
    return round_to(output, dtype)


def _round_input(dtype: torch.dtype, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return (round_to(inputs[0], dtype), *inputs[1:])


@torch.no_grad()
def emulate_half_(model: RecursiveReasoner, dtype: torch.dtype) -> None:
    """Round `model` (float32) to `dtype` where a native half model stores tensors, in place; the
    caller records the half storage (`CompressedCandidate.storage.half`) for the footprint."""
    if model.dtype != torch.float32:
        raise ValueError(f"precision: {dtype} emulation needs a float32 model to start from")
    for module in model.modules():
        if isinstance(module, nn.Linear):
            if isinstance(module.weight, nn.Parameter) and module.weight.dtype == torch.float32:
                module.weight.copy_(round_to(module.weight, dtype))
            module.register_forward_pre_hook(partial(_round_input, dtype))
            module.register_forward_hook(partial(_round_output, dtype))
        elif isinstance(module, CastedEmbedding):
            module.embedding_weight.copy_(round_to(module.embedding_weight, dtype))
        elif isinstance(module, ReasoningBlock):
            module.register_forward_hook(partial(_round_output, dtype))
    if model.puzzle_emb is not None and dtype == torch.float16:
        # a new tensor, so the reference's table is untouched. bf16 keeps the table shared, as the native
        # bf16 path does (each looked-up row is rounded at the first Linear's input): ARC tables are GBs.
        model.puzzle_emb.weights = round_to(model.puzzle_emb.weights, dtype)
    for name in ("H_init", "L_init"):
        getattr(model, name).copy_(round_to(getattr(model, name), dtype))
