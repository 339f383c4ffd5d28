"""Building blocks shared by TRM and HRM, numerically identical to the official `models/layers.py`.

Numerics that matter for checkpoint compatibility (TRM_FACTS §2.3, §11.5):
- weights are stored fp32 and cast to the activation dtype per op (`CastedLinear`, `CastedEmbedding`);
- RMSNorm has no weight, upcasts to fp32 and casts back; RoPE rotates in fp32;
- blocks are post-norm; the `mlp_t` token mixer normalises over the token axis (per channel).

`CastedLinear` subclasses `nn.Linear` so that compression passes that look for `nn.Linear` see
every layer of the model (the official `CastedLinear` is a plain `nn.Module`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from carrygate.models.config import ReasonerConfigBase, swiglu_intermediate

CosSin = tuple[torch.Tensor, torch.Tensor]


def trunc_normal_init_(tensor: torch.Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0) -> torch.Tensor:
    """JAX-style truncated normal: `std` is the std of the *truncated* distribution.

    torch.nn.init.trunc_normal_ takes the std of the untruncated normal instead, which makes the
    initialised tensor narrower than asked; the official code compensates the same way.
    """
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        sqrt2 = math.sqrt(2)
        a, b = math.erf(lower / sqrt2), math.erf(upper / sqrt2)
        z = (b - a) / 2
        c = (2 * math.pi) ** -0.5
        pdf_u, pdf_l = c * math.exp(-0.5 * lower**2), c * math.exp(-0.5 * upper**2)
        comp_std = std / math.sqrt(1 - (upper * pdf_u - lower * pdf_l) / z - ((pdf_u - pdf_l) / z) ** 2)
        tensor.uniform_(a, b).erfinv_().mul_(sqrt2 * comp_std).clip_(lower * comp_std, upper * comp_std)
    return tensor


def rms_norm(hidden: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = hidden.dtype
    hidden = hidden.to(torch.float32)
    hidden = hidden * torch.rsqrt(hidden.square().mean(-1, keepdim=True) + eps)
    return hidden.to(dtype)


class CastedLinear(nn.Linear):
    """Linear with fp32 master weights, cast to the input's dtype at call time."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__(in_features, out_features, bias=bias)
        with torch.no_grad():
            trunc_normal_init_(self.weight, std=1.0 / in_features**0.5)  # LeCun normal
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(input.dtype) if self.bias is not None else None
        return F.linear(input, self.weight.to(input.dtype), bias)


class CastedEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float, cast_to: torch.dtype) -> None:
        super().__init__()
        self.cast_to = cast_to
        self.embedding_weight = nn.Parameter(trunc_normal_init_(torch.empty(num_embeddings, embedding_dim), std=init_std))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.embedding(input, self.embedding_weight.to(self.cast_to))


class PuzzleEmbedding(nn.Module):
    """Per-puzzle vector table. A persistent fp32 *buffer* named `weights`, as in the official
    `CastedSparseEmbedding` (it is trained by a separate sparse optimizer there, so it is not a
    Parameter). Only the inference path is reproduced: rows are looked up and cast."""

    def __init__(self, num_embeddings: int, embedding_dim: int, cast_to: torch.dtype) -> None:
        super().__init__()
        self.cast_to = cast_to
        self.register_buffer("weights", torch.zeros(num_embeddings, embedding_dim), persistent=True)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weights[ids].to(self.cast_to)


class RotaryEmbedding(nn.Module):
    """Non-interleaved ("rotate_half") RoPE over positions 0..T-1, puzzle prefix included."""

    def __init__(self, dim: int, max_positions: int, base: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        freqs = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_cached", emb.cos(), persistent=False)
        self.register_buffer("sin_cached", emb.sin(), persistent=False)

    def forward(self) -> CosSin:
        return self.cos_cached, self.sin_cached


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # q, k: (B, S, H, hd); cos, sin: (S, hd). Rotation runs in fp32, as in the official code.
    dtype = q.dtype
    q, k = q.to(cos.dtype), k.to(cos.dtype)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    q = q * cos + _rotate_half(q) * sin
    k = k * cos + _rotate_half(k) * sin
    return q.to(dtype), k.to(dtype)


class Attention(nn.Module):
    """Non-causal multi-head attention with a fused [Q | K | V] projection (no GQA, no biases)."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv_proj = CastedLinear(hidden_size, 3 * hidden_size, bias=False)
        self.o_proj = CastedLinear(hidden_size, hidden_size, bias=False)
        # Training-only option (set by models.train): RoPE and SDPA run in fp32 while the projections
        # stay in the forward dtype. PyTorch's CPU bf16 flash-attention backward is several times
        # slower than fp32. Only taken in train mode, so inference of every loaded checkpoint keeps
        # the official numerics (the bit-exactness tests run in eval mode).
        self.fp32_core_in_training = False

    def forward(self, hidden: torch.Tensor, cos_sin: CosSin | None) -> torch.Tensor:
        B, S, D = hidden.shape
        qkv = self.qkv_proj(hidden).view(B, S, 3 * self.num_heads, self.head_dim)  # (B, S, 3H, hd)
        q, k, v = qkv.split(self.num_heads, dim=2)  # each (B, S, H, hd)
        dtype = q.dtype
        if self.fp32_core_in_training and self.training:
            q, k, v = q.float(), k.float(), v.float()
        if cos_sin is not None:
            q, k = apply_rotary(q, k, *cos_sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, S, hd)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=False).to(dtype)  # (B, H, S, hd)
        return self.o_proj(out.transpose(1, 2).reshape(B, S, D))


class SwiGLU(nn.Module):
    def __init__(self, width: int, expansion: float) -> None:
        super().__init__()
        inter = swiglu_intermediate(width, expansion)
        self.gate_up_proj = CastedLinear(width, 2 * inter, bias=False)  # rows: [gate | up]
        self.down_proj = CastedLinear(inter, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class ReasoningBlock(nn.Module):
    """Post-norm block: token mixing (attention, or an MLP across tokens) then a channel MLP."""

    def __init__(self, config: ReasonerConfigBase, mlp_t: bool = False) -> None:
        super().__init__()
        self.eps = config.rms_norm_eps
        self.self_attn: Attention | None = None
        self.mlp_t: SwiGLU | None = None
        if mlp_t:
            self.mlp_t = SwiGLU(config.total_len, config.expansion)
        else:
            self.self_attn = Attention(config.hidden_size, config.num_heads)
        self.mlp = SwiGLU(config.hidden_size, config.expansion)

    def forward(self, hidden: torch.Tensor, cos_sin: CosSin | None) -> torch.Tensor:
        if self.mlp_t is not None:
            # Mix along tokens; the norm is then over the token axis, i.e. per channel.
            hidden = hidden.transpose(1, 2)  # (B, D, T)
            hidden = rms_norm(hidden + self.mlp_t(hidden), self.eps).transpose(1, 2)  # (B, T, D)
        else:
            assert self.self_attn is not None
            hidden = rms_norm(hidden + self.self_attn(hidden, cos_sin), self.eps)
        return rms_norm(hidden + self.mlp(hidden), self.eps)


class ReasoningModule(nn.Module):
    """A stack of blocks applied after adding the input injection."""

    def __init__(self, blocks: list[ReasoningBlock]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(blocks)

    def forward(self, hidden: torch.Tensor, injection: torch.Tensor, cos_sin: CosSin | None) -> torch.Tensor:
        hidden = hidden + injection
        for layer in self.layers:
            hidden = layer(hidden, cos_sin)
        return hidden
