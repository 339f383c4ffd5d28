"""Weight quantisation: hand-computed codes, the naive-vs-calibrated INT4 gap, int4 packing, and each
module swap on a tiny TRM (selection globs, dtypes, footprints)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from carrygate.models import build_model
from carrygate.models.compress.quant import dequantize_affine, pack_int4, quant_error_db, quantize_affine, unpack_int4
from carrygate.models.compress.spec import BnbFourBitWeights, Int4Weights, Int8BnbWeights, Int8ChannelWeights, Int8DynamicWeights
from carrygate.models.compress.weights import Bnb4bitLinear, Bnb8bitLinear, DynamicInt8Linear, QuantizedLinear, quantize_weights
from carrygate.models.layers import CastedLinear
from carrygate.models.reasoner import RecursiveReasoner
from tests.conftest import tiny_trm

INT8_SPECS = [Int8ChannelWeights(), Int8DynamicWeights(), Int8BnbWeights(), Int8BnbWeights(threshold=0.0)]
FOUR_BIT_SPECS = [
    Int4Weights(granularity="per_tensor", symmetric=True),
    Int4Weights(granularity="per_channel", symmetric=False),
    Int4Weights(granularity="group", group_size=32),
    BnbFourBitWeights(method="nf4"),
    BnbFourBitWeights(method="fp4", blocksize=128),
]
EXPECTED_TYPE = {
    "int8-channel": QuantizedLinear, "int4": QuantizedLinear, "int8-dynamic": DynamicInt8Linear,
    "int8-bnb": Bnb8bitLinear, "nf4": Bnb4bitLinear, "fp4": Bnb4bitLinear,
}


# -- pure functions ----------------------------------------------------------------------------------
def test_symmetric_per_tensor_int4_by_hand() -> None:
    w = torch.tensor([[1.0, -0.5], [0.25, 7.0]])
    q = quantize_affine(w, 4, granularity="per_tensor", symmetric=True)
    # scale = max|w| / 7 = 1; -0.5 rounds half-to-even to 0, 0.25 to 0.
    assert q.scale.tolist() == [[1.0]]
    assert q.zero_point is None
    assert q.qdata.dtype == torch.int8
    assert q.qdata.tolist() == [[1, 0], [0, 7]]
    assert dequantize_affine(q).tolist() == [[1.0, 0.0], [0.0, 7.0]]


def test_asymmetric_per_channel_int4_by_hand() -> None:
    w = torch.tensor([[-1.5, 0.0, 1.0, 6.0], [-7.5, -2.0, -0.25, -1.0]])
    q = quantize_affine(w, 4, granularity="per_channel", symmetric=False)
    # Row 0: range [-1.5, 6] -> scale 7.5/15 = 0.5, zero point 3.
    # Row 1: all negative, range widened to [-7.5, 0] -> scale 0.5, zero point 15; -0.25/0.5 = -0.5 -> 0.
    assert q.scale.tolist() == [[0.5], [0.5]]
    assert q.zero_point is not None and q.zero_point.dtype == torch.int32
    assert q.zero_point.tolist() == [[3], [15]]
    assert q.qdata.tolist() == [[0, 3, 5, 15], [0, 11, 15, 13]]
    assert dequantize_affine(q).tolist() == [[-1.5, 0.0, 1.0, 6.0], [-7.5, -2.0, 0.0, -1.0]]


def test_all_zero_rows_get_unit_scale_and_stay_zero() -> None:
    w = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 3.0]])
    for symmetric in (True, False):
        q = quantize_affine(w, 4, granularity="per_channel", symmetric=symmetric)
        assert q.scale[0].item() == 1.0
        deq = dequantize_affine(q)
        assert torch.isfinite(deq).all()
        assert deq[0].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("granularity,group_size", [("per_tensor", None), ("per_channel", None), ("group", 16)])
@pytest.mark.parametrize("symmetric", [True, False])
def test_round_trip_error_is_at_most_half_a_step(bits: int, granularity: str, group_size: int | None, symmetric: bool) -> None:
    w = torch.randn(8, 64)
    q = quantize_affine(w, bits, granularity=granularity, symmetric=symmetric, group_size=group_size)  # type: ignore[arg-type]
    # Scales are (rows, groups): (1, 1) and (8, 1) broadcast over the matrix, groups span 16 columns.
    step = q.scale.repeat_interleave(16, dim=1) if granularity == "group" else q.scale
    assert ((dequantize_affine(q) - w).abs() <= step / 2 + 1e-6).all()
    lo, hi = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    codes = q.qdata.to(torch.int32)
    assert codes.min().item() >= lo and codes.max().item() <= hi


def test_naive_int4_error_exceeds_calibrated_on_an_outlier_row() -> None:
    w = torch.randn(64, 64)
    w[7] *= 50.0  # one channel with a 50x range stretches the single per-tensor scale
    naive = quant_error_db(w[:7], dequantize_affine(quantize_affine(w, 4, granularity="per_tensor", symmetric=True))[:7])
    calibrated = quant_error_db(w[:7], dequantize_affine(quantize_affine(w, 4, granularity="per_channel", symmetric=False))[:7])
    # The normal rows mostly round to 0 under the naive scale (SQNR near 0 dB); per channel they keep ~20 dB.
    assert naive < 3.0
    assert calibrated > naive + 15.0


def test_group_error_not_above_per_channel_with_column_outliers() -> None:
    w = torch.randn(32, 128)
    w[:, 5] *= 30.0  # outlier input columns: only their group pays for the wide range
    w[:, 70] *= 30.0
    channel = quant_error_db(w, dequantize_affine(quantize_affine(w, 4, granularity="per_channel", symmetric=False)))
    group = quant_error_db(w, dequantize_affine(quantize_affine(w, 4, granularity="group", symmetric=False, group_size=32)))
    assert group >= channel
    per_group_cols = torch.ones(128, dtype=torch.bool)
    per_group_cols[[5, 70]] = False
    normal = w[:, per_group_cols]
    g = dequantize_affine(quantize_affine(w, 4, granularity="group", symmetric=False, group_size=32))[:, per_group_cols]
    c = dequantize_affine(quantize_affine(w, 4, granularity="per_channel", symmetric=False))[:, per_group_cols]
    assert quant_error_db(normal, g) > quant_error_db(normal, c) + 3.0  # two of four groups are outlier-free


@pytest.mark.parametrize("symmetric", [True, False])
def test_a_ragged_last_group_is_its_own_shorter_group(symmetric: bool) -> None:
    """48 columns in groups of 32: columns 32..47 form a group of 16 whose scale is theirs alone."""
    torch.manual_seed(0)
    w = torch.randn(4, 48)
    w[:, 40] = 50.0  # an outlier in the short group must not touch the first group's scale
    q = quantize_affine(w, 4, granularity="group", symmetric=symmetric, group_size=32)
    assert q.scale.shape == (4, 2) and q.qdata.shape == (4, 48)
    head = quantize_affine(w[:, :32], 4, granularity="group", symmetric=symmetric, group_size=32)
    tail = quantize_affine(w[:, 32:], 4, granularity="per_channel", symmetric=symmetric)
    assert torch.equal(q.scale[:, :1], head.scale) and torch.allclose(q.scale[:, 1:], tail.scale)
    expected = torch.cat((dequantize_affine(head), dequantize_affine(tail)), dim=1)
    assert torch.allclose(dequantize_affine(q), expected)


def test_quant_error_db_values() -> None:
    ref = torch.tensor([1.0, 0.0])
    assert quant_error_db(ref, ref) == math.inf
    assert quant_error_db(ref, torch.tensor([0.9, 0.0])) == pytest.approx(20.0)


@pytest.mark.parametrize("numel", [0, 1, 2, 7, 64, 1001])
@pytest.mark.parametrize("signed", [True, False])
def test_int4_pack_unpack_round_trip(numel: int, signed: bool) -> None:
    lo, hi = (-8, 8) if signed else (0, 16)
    codes = torch.randint(lo, hi, (numel,), dtype=torch.int8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(numel / 2)
    assert torch.equal(unpack_int4(packed, numel, signed=signed), codes)


def test_pack_int4_rejects_codes_that_need_more_than_four_bits() -> None:
    with pytest.raises(ValueError):
        pack_int4(torch.tensor([3, 16], dtype=torch.int16))


# -- module swaps ------------------------------------------------------------------------------------
def _tiny(forward_dtype: str = "float32", **overrides: object) -> RecursiveReasoner:
    # One H and one L cycle, two ACT steps: a randomly initialised recursion is not contractive and
    # amplifies any perturbation with depth, where a trained one does not.
    fields: dict[str, object] = {"hidden_size": 64, "num_heads": 2, "expansion": 2, "H_cycles": 1, "L_cycles": 1, "halt_max_steps": 2}
    return build_model(tiny_trm(**(fields | {"forward_dtype": forward_dtype} | overrides)))


def _final_z_H(model: RecursiveReasoner) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    inputs = torch.randint(0, 5, (4, 9), generator=gen)
    ids = torch.randint(0, 3, (4,), generator=gen)
    with torch.no_grad():
        *_, last = model.steps(inputs, ids)
    assert torch.isfinite(last.logits).all()
    return last.carry.z_H


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0).item()


def _linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


@pytest.mark.parametrize("forward_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("spec", INT8_SPECS + FOUR_BIT_SPECS, ids=lambda s: f"{s.method}-{getattr(s, 'granularity', '')}")
def test_every_method_swaps_all_layers_and_stays_close(spec: object, forward_dtype: str) -> None:
    reference = _tiny(forward_dtype)
    model = copy.deepcopy(reference)
    swapped = quantize_weights(model, spec, include=["*"], exclude=[])
    assert swapped == _linear_names(reference)
    for name in swapped:
        assert isinstance(model.get_submodule(name), EXPECTED_TYPE[spec.method])  # type: ignore[attr-defined]
    ref, out = _final_z_H(reference), _final_z_H(model)
    assert out.dtype == ref.dtype
    assert _cosine(out, ref) > (0.9 if spec in INT8_SPECS else 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("spec", INT8_SPECS + FOUR_BIT_SPECS, ids=lambda s: f"{s.method}-{getattr(s, 'granularity', '')}")
def test_layer_returns_the_input_dtype_and_keeps_an_fp32_bias(spec: object, dtype: torch.dtype) -> None:
    holder = nn.Sequential(CastedLinear(64, 96, bias=True))
    with torch.no_grad():
        holder[0].bias.normal_()
    x = torch.randn(3, 5, 64)
    reference = holder[0](x)
    quantize_weights(holder, spec, include=["*"], exclude=[])
    layer = holder[0]
    for _ in range(2):  # a second call: nothing cast in place by the first
        out = layer(x.to(dtype))
        assert out.dtype == dtype and out.shape == reference.shape
    bias = layer.inner.bias() if isinstance(layer, DynamicInt8Linear) else layer.bias  # packed with the int8 weight
    assert bias.dtype == torch.float32
    assert quant_error_db(reference, out) > (20.0 if spec in INT8_SPECS else 8.0)


def test_exclude_globs_keep_heads_in_full_precision() -> None:
    model = _tiny()
    swapped = quantize_weights(model, Int8ChannelWeights(), include=["*"], exclude=["lm_head", "q_head"])
    assert "lm_head" not in swapped and "q_head" not in swapped
    assert type(model.lm_head) is CastedLinear and type(model.q_head) is CastedLinear
    assert all(isinstance(model.get_submodule(n), QuantizedLinear) for n in swapped)
    assert len(swapped) == len(_linear_names(model)) - 2


def test_include_globs_match_suffixes() -> None:
    model = _tiny()
    swapped = quantize_weights(model, Int4Weights(), include=["mlp.*"], exclude=["*down_proj"])
    assert swapped == ["L_level.layers.0.mlp.gate_up_proj", "L_level.layers.1.mlp.gate_up_proj"]
    mixer = _tiny(mlp_t=True, pos_encodings="none")
    swapped = quantize_weights(mixer, Int8ChannelWeights(), include=["*mlp_t*"], exclude=[])
    assert swapped and all(".mlp_t." in name for name in swapped)


def test_empty_match_raises() -> None:
    with pytest.raises(ValueError, match="include/exclude matched no Linear layer"):
        quantize_weights(_tiny(), Int8ChannelWeights(), include=["no_such_layer"], exclude=[])
    with pytest.raises(ValueError, match="include/exclude matched no Linear layer"):
        quantize_weights(_tiny(), Int8ChannelWeights(), include=["*"], exclude=["*"])


def test_a_group_size_wider_than_a_layer_quantises_it_as_one_ragged_group() -> None:
    model = _tiny(mlp_t=True, pos_encodings="none")  # mlp_t.gate_up_proj has in_features = 11 tokens
    names = quantize_weights(model, Int4Weights(granularity="group", group_size=32), include=["*"], exclude=[])
    layer = model.get_submodule(next(n for n in names if n.endswith("mlp_t.gate_up_proj")))
    assert isinstance(layer, QuantizedLinear) and layer.scale.shape == (layer.out_features, 1)


def test_int8_channel_is_far_more_faithful_than_naive_int4() -> None:
    reference = _tiny()
    ref = _final_z_H(reference)
    errors = {}
    for spec in (Int8ChannelWeights(), Int4Weights(granularity="per_tensor", symmetric=True)):
        model = copy.deepcopy(reference)
        quantize_weights(model, spec, include=["*"], exclude=[])
        errors[spec.method] = quant_error_db(ref, _final_z_H(model))
    assert errors["int8-channel"] > errors["int4"] + 15.0


def test_hooks_on_a_replaced_layer_move_to_its_replacement() -> None:
    holder = nn.Sequential(CastedLinear(64, 8, bias=False))
    holder[0].register_forward_hook(lambda _m, _i, out: out * 0.0)
    quantize_weights(holder, Int8ChannelWeights(), include=["*"], exclude=[])
    assert holder(torch.randn(2, 64)).abs().sum().item() == 0.0


def test_quantized_linear_is_a_linear_with_a_dequantised_weight() -> None:
    linear = CastedLinear(64, 16, bias=False)
    layer = QuantizedLinear.from_linear(linear, 4, granularity="per_channel", symmetric=False)
    assert isinstance(layer, nn.Linear)
    assert "weight" not in dict(layer.named_parameters())
    assert layer.weight.shape == (16, 64) and layer.weight.dtype == torch.float32
    assert torch.equal(layer.weight, dequantize_affine(quantize_affine(linear.weight, 4, granularity="per_channel", symmetric=False)))
    assert set(layer.state_dict()) == {"qdata", "scale", "zero_point"}



def test_weight_cache_built_under_inference_mode_still_serves_autograd() -> None:
    layer = QuantizedLinear.from_linear(CastedLinear(16, 8, bias=True), 8, granularity="per_channel", symmetric=True)
    with torch.inference_mode():  # activation calibration runs the model this way first
        layer(torch.randn(2, 16))
    x = torch.randn(2, 16, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad is not None and torch.allclose(x.grad, layer.weight.sum(0).expand(2, 16))

# -- storage -----------------------------------------------------------------------------------------
def test_storage_bytes_int8_channel() -> None:
    out_f, in_f = 24, 40
    layer = QuantizedLinear.from_linear(CastedLinear(in_f, out_f, bias=False), 8, granularity="per_channel", symmetric=True)
    assert layer.storage_bytes() == out_f * in_f + 4 * out_f
    with_bias = QuantizedLinear.from_linear(CastedLinear(in_f, out_f, bias=True), 8, granularity="per_channel", symmetric=True)
    assert with_bias.storage_bytes() == out_f * in_f + 4 * out_f + 4 * out_f


def test_storage_bytes_int4_packed() -> None:
    out_f, in_f = 7, 9  # odd element count: the last byte holds one code
    naive = QuantizedLinear.from_linear(CastedLinear(in_f, out_f, bias=False), 4, granularity="per_tensor", symmetric=True)
    assert naive.storage_bytes() == math.ceil(out_f * in_f / 2) + 4
    calibrated = QuantizedLinear.from_linear(CastedLinear(in_f, out_f, bias=False), 4, granularity="per_channel", symmetric=False)
    assert calibrated.storage_bytes() == math.ceil(out_f * in_f / 2) + 4 * out_f + out_f  # uint8 zero points
    grouped = QuantizedLinear.from_linear(CastedLinear(64, out_f, bias=False), 4, granularity="group", symmetric=True, group_size=32)
    assert grouped.storage_bytes() == math.ceil(out_f * 64 / 2) + 4 * out_f * 2


def test_storage_bytes_library_layers() -> None:
    linear = CastedLinear(64, 32, bias=True)
    assert DynamicInt8Linear(linear).storage_bytes() == 64 * 32 + 4 + 4 * 32
    assert Bnb8bitLinear(linear, threshold=6.0).storage_bytes() == 64 * 32 + 4 * 32 + 4 * 32
    assert Bnb4bitLinear(linear, "nf4", 64).storage_bytes() == 64 * 32 // 2 + 4 * (64 * 32 // 64) + 4 * 32
