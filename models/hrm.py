"""Hierarchical Reasoning Model (HRM): a slow H module and a fast L module with separate weights.

Reference: G. Wang et al., "Hierarchical Reasoning Model" (arXiv 2506.21734) and sapientinc/HRM
`models/hrm/hrm_act_v1.py` at 42410daa. The puzzle prefix is ceil(puzzle_emb_ndim / hidden) = 1
position. The official code uses FlashAttention; attention here is PyTorch SDPA with the same scale.

One ACT step (H_cycles x L_cycles L-updates, H_cycles H-updates):

    for h in range(H_cycles):
        for l in range(L_cycles): z_L <- L_level(z_L, z_H + x)
        z_H <- H_level(z_H, z_L)

Everything but the final L and H update runs under no_grad (the "1-step gradient").
"""

from __future__ import annotations

import torch

from carrygate.models.config import HRMConfig
from carrygate.models.layers import CosSin, ReasoningBlock, ReasoningModule
from carrygate.models.reasoner import Carry, RecursiveReasoner


class HRM(RecursiveReasoner):
    config: HRMConfig

    def __init__(self, config: HRMConfig) -> None:
        super().__init__(config)
        self.H_level = ReasoningModule([ReasoningBlock(config) for _ in range(config.H_layers)])
        self.L_level = ReasoningModule([ReasoningBlock(config) for _ in range(config.L_layers)])

    def recurse(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor, cos_sin: CosSin | None) -> Carry:
        H, L = self.config.H_cycles, self.config.L_cycles
        with torch.no_grad():
            for h in range(H):
                for l in range(L):
                    if not (h == H - 1 and l == L - 1):
                        z_L = self.L_level(z_L, z_H + x, cos_sin)
                if h != H - 1:
                    z_H = self.H_level(z_H, z_L, cos_sin)
        z_L = self.L_level(z_L, z_H + x, cos_sin)
        z_H = self.H_level(z_H, z_L, cos_sin)
        return Carry(z_H, z_L)
