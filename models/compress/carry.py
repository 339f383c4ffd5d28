"""Host-side carry compression (paper App. M): between ACT steps the runtime stores z_H / z_L as
`bits`-bit integers (INT8 in the paper) with one symmetric scale per token, and dequantises them
before the next step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from carrygate.models.compress.spec import CarrySpec
from carrygate.models.reasoner import Carry


def quantize_dequantize_per_token(z: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """(B, T, D) -> same shape and dtype, each token rounded to `bits` with scale max|z| / qmax."""
    qmax = 2 ** (bits - 1) - 1
    z32 = z.float()
    scale = z32.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / qmax
    return (torch.round(z32 / scale).clamp(-qmax, qmax) * scale).to(z.dtype)


@dataclass(frozen=True)
class CarryCodec:
    """The host-side round trip of the carry between ACT steps; `bits` is what the footprint counts."""

    bits: int
    states: tuple[str, ...]

    def __call__(self, carry: Carry) -> Carry:
        z_H = quantize_dequantize_per_token(carry.z_H, self.bits) if "z_H" in self.states else carry.z_H
        z_L = quantize_dequantize_per_token(carry.z_L, self.bits) if "z_L" in self.states else carry.z_L
        return Carry(z_H, z_L)


def carry_codec(spec: CarrySpec) -> CarryCodec:
    return CarryCodec(spec.bits, tuple(spec.states))
