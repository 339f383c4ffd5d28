"""Small cases computed by hand, and the numerics the official code fixes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from carrygate.models.config import swiglu_intermediate
from carrygate.models.layers import CastedLinear, RotaryEmbedding, SwiGLU, apply_rotary, rms_norm, trunc_normal_init_


def test_rms_norm_by_hand() -> None:
    x = torch.tensor([[3.0, 4.0]])
    # mean(x^2) = 12.5 -> x / sqrt(12.5 + eps)
    expected = torch.tensor([[3.0, 4.0]]) / math.sqrt(12.5 + 1e-5)
    assert torch.allclose(rms_norm(x, 1e-5), expected)


def test_rms_norm_computes_in_fp32_and_returns_input_dtype() -> None:
    x = torch.randn(2, 5, 8).to(torch.bfloat16)
    out = rms_norm(x, 1e-5)
    assert out.dtype == torch.bfloat16
    ref = (x.float() * torch.rsqrt(x.float().square().mean(-1, keepdim=True) + 1e-5)).to(torch.bfloat16)
    assert torch.equal(out, ref)


def test_swiglu_intermediate_sizes_match_official_rounding() -> None:
    # TRM_FACTS §2.3: I(512,4)=1536, I(97,4)=512, I(916,4)=2560, I(901,4)=2560
    assert [swiglu_intermediate(w, 4) for w in (512, 97, 916, 901)] == [1536, 512, 2560, 2560]


def test_swiglu_gate_is_first_half() -> None:
    m = SwiGLU(1, 1.0)  # inter = 256
    with torch.no_grad():
        m.gate_up_proj.weight.zero_()
        m.gate_up_proj.weight[0, 0] = 2.0  # gate unit 0
        m.gate_up_proj.weight[256, 0] = 3.0  # up unit 0
        m.down_proj.weight.zero_()
        m.down_proj.weight[0, 0] = 1.0
    x = torch.tensor([[0.5]])
    expected = F.silu(torch.tensor(1.0)) * 1.5  # silu(gate=2*0.5) * up(3*0.5)
    assert torch.allclose(m(x), expected.view(1, 1))


def test_casted_linear_is_nn_linear_and_casts_to_input_dtype() -> None:
    layer = CastedLinear(4, 3, bias=True)
    assert isinstance(layer, torch.nn.Linear)
    assert layer.weight.dtype == torch.float32
    x = torch.randn(2, 4).to(torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, F.linear(x, layer.weight.to(torch.bfloat16), layer.bias.to(torch.bfloat16)))


def test_rope_rotate_half_by_hand() -> None:
    # head_dim 2: one frequency, inv_freq = 1; position 1 rotates (a, b) by 1 radian.
    rope = RotaryEmbedding(dim=2, max_positions=2, base=10000.0)
    cos, sin = rope()
    q = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2).expand(1, 2, 1, 2)
    rq, _ = apply_rotary(q, q, cos, sin)
    assert torch.allclose(rq[0, 0, 0], torch.tensor([1.0, 0.0]))  # position 0: identity
    # rotate_half((1,0)) = (-0, 1): (1*cos1 - 0, 0*cos1 + 1*sin1)
    assert torch.allclose(rq[0, 1, 0], torch.tensor([math.cos(1.0), math.sin(1.0)]))


def test_trunc_normal_has_requested_std_and_bounds() -> None:
    t = trunc_normal_init_(torch.empty(200_000), std=0.5)
    assert abs(float(t.std()) - 0.5) < 0.01
    # bounds are +-2 sigma of the compensated (untruncated) normal, a bit wider than 2 * std
    assert float(t.abs().max()) <= 2 * 0.5 / 0.8796 + 1e-6
