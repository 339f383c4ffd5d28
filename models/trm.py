"""Tiny Recursive Model (TRM): one small network that updates the latent z_L and the answer z_H.

Reference: A. Jolicoeur-Martineau, "Less is More: Recursive Reasoning with Tiny Networks"
(arXiv 2510.04871) and SamsungSAILMontreal/TinyRecursiveModels `models/recursive_reasoning/trm.py`
at e7b68717. Module and state-dict names are the official inner-module names
(`L_level.layers.{i}.self_attn.qkv_proj.weight`, ...); see TRM_FACTS §2.2.

One ACT step = H_cycles x (L_cycles latent updates + 1 answer update), all with the same `L_level`:

    z_L <- L_level(z_L, z_H + x)   (L_cycles times; the only place the input x is injected)
    z_H <- L_level(z_H, z_L)

The official code runs the first H_cycles-1 cycles under no_grad and backpropagates through the
last; `recurse` does the same, so training through it matches the official gradient.
"""

from __future__ import annotations

import torch

from carrygate.models.config import TRMConfig
from carrygate.models.layers import CosSin, ReasoningBlock, ReasoningModule
from carrygate.models.reasoner import Carry, RecursiveReasoner


class TRM(RecursiveReasoner):
    config: TRMConfig

    def __init__(self, config: TRMConfig) -> None:
        super().__init__(config)
        self.L_level = ReasoningModule([ReasoningBlock(config, mlp_t=config.mlp_t) for _ in range(config.L_layers)])

    def recurse(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor, cos_sin: CosSin | None) -> Carry:
        H, L = self.config.H_cycles, self.config.L_cycles
        with torch.no_grad():
            for _ in range(H - 1):
                for _ in range(L):
                    z_L = self.L_level(z_L, z_H + x, cos_sin)
                z_H = self.L_level(z_H, z_L, cos_sin)
        for _ in range(L):
            z_L = self.L_level(z_L, z_H + x, cos_sin)
        z_H = self.L_level(z_H, z_L, cos_sin)
        return Carry(z_H, z_L)
