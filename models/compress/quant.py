"""Affine weight quantisation as pure tensor functions: no module state, no model knowledge.

The paper's two INT4 quantisers are both affine (integer code q, real value ~ (q - zero_point) * scale):
- *naive* INT4: one symmetric scale for the whole matrix, no calibration;
- *calibrated* INT4: per output channel, asymmetric min/max range (the range always includes 0,
  so an exact zero stays exact and the zero point is an integer code).
Group-wise scales (one per row per `group_size` input columns) are the finer step beyond per-channel.

Granularity is encoded the way torchao's `quantize_affine` does it with `block_size`: the matrix is
viewed as (rows, groups, columns per group) and every (row, group) block gets one scale.

    per_tensor  (out, in) -> (1,   1,          out*in)
    per_channel (out, in) -> (out, 1,          in)
    group       (out, in) -> (out, ceil(in/g), g)

A group size that does not divide `in` leaves a shorter last group, as torchao allows: the view is
padded with zeros, which change no range (0 is always inside it) and are cropped after rounding.

`pack_int4` / `unpack_int4` store two 4-bit codes per byte, so measured footprints are honest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from carrygate.models.vocabulary import Granularity


@dataclass(frozen=True)
class QTensor:
    """A quantised 2-D weight.

    `qdata` holds the integer codes with the weight's shape (int8; uint8 only for asymmetric 8-bit,
    whose codes 0..255 do not fit int8). `scale` (fp32) and `zero_point` (int32, None when symmetric)
    have shape (rows, groups): (1, 1) per tensor, (out, 1) per channel, (out, in // group_size) per group.
    """

    qdata: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    bits: int
    granularity: Granularity
    group_size: int | None
    shape: torch.Size

    @property
    def symmetric(self) -> bool:
        return self.zero_point is None


def code_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Symmetric codes are [-(2^(b-1)-1), 2^(b-1)-1] (the extra negative code is unused, so the grid
    is symmetric around 0); asymmetric codes are [0, 2^b - 1]."""
    if symmetric:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _blocks(w: torch.Tensor, granularity: Granularity, group_size: int | None) -> torch.Tensor:
    """The (rows, groups, columns per group) view of a 2-D `w` for the given granularity; a ragged
    last group is zero-padded (see the module docstring)."""
    out_features, in_features = w.shape
    if granularity == "per_tensor":
        return w.reshape(1, 1, -1)
    if granularity == "per_channel":
        return w.reshape(out_features, 1, in_features)
    if granularity == "group":
        if group_size is None or group_size <= 0:
            raise ValueError(f"group_size must be a positive integer with granularity 'group', got {group_size}")
        pad = -in_features % group_size
        if pad:
            w = torch.nn.functional.pad(w, (0, pad))
        return w.reshape(out_features, (in_features + pad) // group_size, group_size)
    raise ValueError(f"unknown granularity {granularity!r}")


def _unblock(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of `_blocks`: drop a ragged group's padding and restore the 2-D shape."""
    return x.reshape(shape[0], -1)[:, : shape[1]]


def quantize_affine(
    w: torch.Tensor,
    bits: int,
    *,
    granularity: Granularity,
    symmetric: bool,
    group_size: int | None = None,
) -> QTensor:
    """Quantise a 2-D weight to `bits`-bit integer codes with round-half-to-even.

    Args:
        w: (out_features, in_features) weight, any float dtype (computed in fp32).
        bits: 2..8.
        granularity: one scale per tensor, per output row, or per row per `group_size` input columns.
        symmetric: scale = max|w| / (2^(b-1)-1), no zero point; otherwise min/max (with 0 included)
            mapped onto [0, 2^b-1] with an integer zero point.
        group_size: input columns per group; required with (and only with) granularity 'group'.
    Returns:
        The codes and their parameters; `dequantize_affine` inverts it up to rounding.
    Raises:
        ValueError: for a non-2-D weight, bad bits, or a non-positive group size.
    """
    if w.dim() != 2:
        raise ValueError(f"quantize_affine expects a 2-D weight, got shape {tuple(w.shape)}")
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8, got {bits}")
    if granularity != "group" and group_size is not None:
        raise ValueError(f"group_size is only valid with granularity 'group', got {granularity!r}")
    x = _blocks(w.detach().to(torch.float32), granularity, group_size)  # (R, G, C)
    qmin, qmax = code_range(bits, symmetric)
    zero_point: torch.Tensor | None = None
    if symmetric:
        scale = x.abs().amax(dim=-1) / qmax  # (R, G)
    else:
        lo = x.amin(dim=-1).clamp(max=0.0)  # 0 inside the range: zero stays exactly representable
        hi = x.amax(dim=-1).clamp(min=0.0)
        scale = (hi - lo) / (qmax - qmin)
    # An all-zero block has scale 0; any scale represents it exactly, and 1 avoids dividing by 0.
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round(x / scale.unsqueeze(-1))
    if not symmetric:
        zp = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)
        codes = codes + zp.unsqueeze(-1)
        zero_point = zp.to(torch.int32)
    codes = codes.clamp(qmin, qmax)
    code_dtype = torch.uint8 if qmax > 127 else torch.int8
    return QTensor(
        qdata=_unblock(codes.to(code_dtype), w.shape).contiguous(),
        scale=scale.contiguous(),
        zero_point=zero_point,
        bits=bits,
        granularity=granularity,
        group_size=group_size,
        shape=w.shape,
    )


def dequantize_affine(q: QTensor) -> torch.Tensor:
    """fp32 weight (q.shape) from codes: (code - zero_point) * scale, per block."""
    codes = _blocks(q.qdata.to(torch.float32), q.granularity, q.group_size)  # (R, G, C)
    if q.zero_point is not None:
        codes = codes - q.zero_point.to(torch.float32).unsqueeze(-1)
    return _unblock(codes * q.scale.to(torch.float32).unsqueeze(-1), q.shape)


def quant_error_db(ref: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantisation-noise ratio in dB, 20 log10(|ref| / |ref - approx|), as torchao's
    `compute_error`. Identical tensors give +inf."""
    ref32, approx32 = ref.detach().to(torch.float32), approx.detach().to(torch.float32)
    noise = torch.linalg.vector_norm(ref32 - approx32).item()
    signal = torch.linalg.vector_norm(ref32).item()
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 20.0 * math.log10(signal / noise)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per uint8, first code in the low nibble: (numel,) -> (ceil(numel / 2),).

    Accepts signed codes in [-8, 7] or unsigned in [0, 15] (any integer dtype); only the low nibble
    is kept, so `unpack_int4(..., signed=...)` must be told which one it was."""
    flat = codes.reshape(-1).to(torch.int16)
    if flat.numel() and (flat.min().item() < -8 or flat.max().item() > 15):
        raise ValueError("pack_int4: codes must lie in [-8, 15]")
    nibbles = (flat & 0xF).to(torch.uint8)
    if nibbles.numel() % 2:
        nibbles = torch.cat((nibbles, nibbles.new_zeros(1)))
    pairs = nibbles.reshape(-1, 2)
    return (pairs[:, 0] | (pairs[:, 1] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor, numel: int, *, signed: bool = False) -> torch.Tensor:
    """Inverse of `pack_int4`: the first `numel` codes as int8, sign-extended when `signed`."""
    if numel > 2 * packed.numel():
        raise ValueError(f"unpack_int4: {packed.numel()} bytes hold at most {2 * packed.numel()} codes, asked for {numel}")
    packed = packed.reshape(-1).to(torch.int16)
    nibbles = torch.stack((packed & 0xF, packed >> 4), dim=-1).reshape(-1)[:numel]
    if signed:
        nibbles = torch.where(nibbles >= 8, nibbles - 16, nibbles)
    return nibbles.to(torch.int8)
