"""Host-side carry compression (paper App. M): between ACT steps the runtime stores z_H / z_L as
INT8 with one symmetric scale per token, and dequantises them before the next step."""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.compress.spec import CarrySpec
from models.reasoner import Carry


def quantize_dequantize_per_token(z: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """(B, T, D) -> same shape and dtype, each token rounded to `bits` with scale max|z| / qmax."""
    qmax = 2 ** (bits - 1) - 1
    z32 = z.float()
    scale = z32.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / qmax
    return (torch.round(z32 / scale).clamp(-qmax, qmax) * scale).to(z.dtype)


def carry_codec(spec: CarrySpec) -> Callable[[Carry], Carry]:
    def codec(carry: Carry) -> Carry:
        z_H = quantize_dequantize_per_token(carry.z_H, spec.bits) if "z_H" in spec.states else carry.z_H
        z_L = quantize_dequantize_per_token(carry.z_L, spec.bits) if "z_L" in spec.states else carry.z_L
        return Carry(z_H, z_L)

    return codec
