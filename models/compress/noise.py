"""Seeded Gaussian weight noise: a finely graded, architecture-neutral damage for signal validity.

Each selected Linear weight W becomes W + sigma * rms(W) * N(0, 1). The generator is seeded per layer
from (seed, layer name), so a candidate is reproducible whatever other layers it touches."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from carrygate.models.compress.scope import select_linears
from carrygate.models.compress.spec import NoiseSpec


def _layer_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@torch.no_grad()
def add_weight_noise_(model: nn.Module, spec: NoiseSpec, include: list[str], exclude: list[str]) -> list[str]:
    """Perturb, in place, every Linear the globs select (a fresh tensor is assigned, never written
    into, so a weight shared with the reference stays intact). Returns the perturbed layer names."""
    layers = select_linears(model, include, exclude)
    if not layers:
        raise ValueError(f"noise: include/exclude matched no Linear layer: include={include}, exclude={exclude}")
    for name, layer in layers.items():
        w = layer.weight.detach().to(torch.float32)
        generator = torch.Generator().manual_seed(_layer_seed(spec.seed, name))
        rms = w.square().mean().sqrt()
        noisy = w + spec.sigma * rms * torch.randn(w.shape, generator=generator)
        layer.weight = nn.Parameter(noisy.to(layer.weight.dtype).to(layer.weight.device), requires_grad=False)
    return list(layers)
