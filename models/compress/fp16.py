"""FP16 on a CPU, emulated: fp16 matmuls run at 0.3-2.5 GFLOP/s here, ~100x slower than fp32.

The emulation rounds to fp16 wherever a native fp16 model stores a tensor, and computes in fp32 in
between — the semantics of fp16 GEMMs with fp32 accumulation (tensor cores, most NPUs):
- weights (Linear, token and position embeddings, the puzzle table) rounded to fp16 once;
- every Linear's input and output, every block's output (the carry) rounded to fp16 on the fly;
- overflow past 65504 becomes inf, as in fp16.
Not rounded: the elementwise ops inside SwiGLU and the residual adds before each RMSNorm (which
upcasts to fp32 anyway). Results from this path say "fp16 (emulated on CPU)"; on CUDA, use native fp16.
"""

from __future__ import annotations

import torch
from torch import nn

from models.layers import CastedEmbedding, ReasoningBlock
from models.reasoner import RecursiveReasoner


def round_fp16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float16).to(t.dtype)


def _round_output(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
    return round_fp16(output)


def _round_input(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return (round_fp16(inputs[0]), *inputs[1:])


@torch.no_grad()
def emulate_fp16_(model: RecursiveReasoner) -> None:
    if model.dtype != torch.float32:
        raise ValueError("precision: fp16 emulation needs a float32 model to start from")
    for module in model.modules():
        if isinstance(module, nn.Linear):
            if isinstance(module.weight, nn.Parameter) and module.weight.dtype == torch.float32:
                module.weight.copy_(round_fp16(module.weight))
            module.register_forward_pre_hook(_round_input)
            module.register_forward_hook(_round_output)
        elif isinstance(module, CastedEmbedding):
            module.embedding_weight.copy_(round_fp16(module.embedding_weight))
        elif isinstance(module, ReasoningBlock):
            module.register_forward_hook(_round_output)
    if model.puzzle_emb is not None:
        model.puzzle_emb.weights = round_fp16(model.puzzle_emb.weights)  # a new tensor: the table may be shared
    for name in ("H_init", "L_init"):
        getattr(model, name).copy_(round_fp16(getattr(model, name)))
    model.emulated_fp16 = True
