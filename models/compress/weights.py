"""Weight quantisation of the Linear layers a spec selects: `quantize_weights(model, spec, ...)`.

Shaped like torchao's `quantize_`: the spec is data, a registry maps its class to a handler that
builds the replacement for one `nn.Linear`, and the walk swaps the selected layers in place.
- `int8-channel`, `int4`: `QuantizedLinear` (our own codes, see `quant.py`); still an `nn.Linear`,
  so later passes (activation fake-quantisation) see it;
- `int8-dynamic`: PyTorch's dynamic-quantised Linear, real int8 kernels, CPU only;
- `int8-bnb`, `nf4` / `fp4`: bitsandbytes `Linear8bitLt` / `Linear4bit`, as the paper used.
Every replacement returns the input dtype and reports its honest `storage_bytes()`. Forward hooks
already on a replaced layer (fp16 emulation) move to its replacement.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from carrygate.models.compress.quant import Granularity, QTensor, dequantize_affine, pack_int4, quantize_affine, unpack_int4
from carrygate.models.compress.scope import select_linears
from carrygate.models.compress.spec import (
    BnbFourBitWeights,
    Int4Weights,
    Int8BnbWeights,
    Int8ChannelWeights,
    Int8DynamicWeights,
    IntWeights,
    WeightSpec,
)


def _float_bias(linear: nn.Linear) -> nn.Parameter | None:
    # Biases stay fp32 masters and are cast per call, as in CastedLinear.
    if linear.bias is None:
        return None
    return nn.Parameter(linear.bias.detach().to(torch.float32).clone(), requires_grad=False)


def _tensor_bytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class QuantizedLinear(nn.Linear):
    """Weight-only quantised Linear: integer codes (two per byte at 4 bits), fp32 scales, uint8 zero
    points (asymmetric only), fp32 bias. `weight` is the dequantised fp32 matrix, read-only."""

    def __init__(self, q: QTensor, bias: nn.Parameter | None) -> None:
        nn.Module.__init__(self)  # not nn.Linear.__init__: it would allocate a dense fp32 weight
        self.out_features, self.in_features = q.shape
        self.bits, self.granularity, self.group_size = q.bits, q.granularity, q.group_size
        self.register_buffer("qdata", pack_int4(q.qdata) if q.bits == 4 else q.qdata)
        self.register_buffer("scale", q.scale)
        # Codes lie in [0, 2^b - 1] with b <= 8, so a zero point fits a byte.
        self.register_buffer("zero_point", None if q.zero_point is None else q.zero_point.to(torch.uint8))
        self.register_parameter("bias", bias)
        self.register_buffer("_weight_cache", None, persistent=False)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, bits: int, *, granularity: Granularity, symmetric: bool, group_size: int | None = None
    ) -> QuantizedLinear:
        q = quantize_affine(linear.weight, bits, granularity=granularity, symmetric=symmetric, group_size=group_size)
        return cls(q, _float_bias(linear))

    def qtensor(self) -> QTensor:
        shape = torch.Size((self.out_features, self.in_features))
        codes = unpack_int4(self.qdata, shape.numel(), signed=self.zero_point is None) if self.bits == 4 else self.qdata
        zero_point = None if self.zero_point is None else self.zero_point.to(torch.int32)
        return QTensor(codes.reshape(shape), self.scale, zero_point, self.bits, self.granularity, self.group_size, shape)

    @property  # type: ignore[override]
    def weight(self) -> torch.Tensor:
        # Dequantise once and keep it: the recursion calls each layer dozens of times per ACT step.
        # Built as a normal tensor even on a first call under inference_mode (activation calibration),
        # so later forwards that track autograd can still use it.
        if self._weight_cache is None:
            with torch.inference_mode(False), torch.no_grad():
                self._weight_cache = dequantize_affine(self.qtensor())
        return self._weight_cache

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> QuantizedLinear:
        self._weight_cache = None  # device moves: rebuild from the moved codes
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._weight_cache = None
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(input.dtype) if self.bias is not None else None
        return F.linear(input, self.weight.to(input.dtype), bias)

    def storage_bytes(self) -> int:
        # Codes as deployed, bit-packed: `qdata` packs only 4-bit codes; other widths below 8 are
        # held one per byte here but count ceil(numel * bits / 8) bytes.
        codes = math.ceil(self.out_features * self.in_features * self.bits / 8)
        return codes + _tensor_bytes(self.scale, self.zero_point, self.bias)

    def extra_repr(self) -> str:
        sym = "symmetric" if self.zero_point is None else "asymmetric"
        group = f", group_size={self.group_size}" if self.group_size else ""
        return f"{super().extra_repr()}, int{self.bits} {self.granularity} {sym}{group}"


class DynamicInt8Linear(nn.Module):
    """`torch.ao.nn.quantized.dynamic.Linear`: int8 per-tensor weights, activations quantised per
    call, int8 GEMM (fbgemm / onednn). It takes fp32 only, so other dtypes round-trip through fp32."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if linear.weight.device.type != "cpu":
            raise ValueError("weights: int8-dynamic runs on CPU only")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # from_float wants exactly nn.Linear (not CastedLinear) with a qconfig attached.
        plain = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
        with torch.no_grad():
            plain.weight.copy_(linear.weight.to(torch.float32))
            if linear.bias is not None:
                plain.bias.copy_(linear.bias.to(torch.float32))
        with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices, not our concern here
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
            from torch.ao.quantization import default_dynamic_qconfig

            plain.qconfig = default_dynamic_qconfig
            self.inner = DynamicLinear.from_float(plain)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.inner(input.to(torch.float32)).to(input.dtype)

    def storage_bytes(self) -> int:
        weight = self.inner.weight()
        scales = 1 if weight.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric) else self.out_features
        bias = self.inner.bias()
        return weight.numel() + 4 * scales + (4 * bias.numel() if bias is not None else 0)


def _drop_cast_notice(record: logging.LogRecord) -> bool:
    return "will be cast from" not in record.getMessage()


def _bitsandbytes() -> ModuleType:
    """Import bitsandbytes lazily (it takes seconds) and quiet its noise. At import, the CPU backend
    logs that the optional `kernels` package (a faster AVX512-BF16 4-bit GEMM) is missing, and the
    torch modules it pulls in warn that `torch.jit.script_method` is deprecated. On *every* int8 call
    it logs that non-fp16 inputs are cast to fp16 before quantisation: that is LLM.int8's design
    (documented on `Bnb8bitLinear`), and once per layer per recursion step would flood the logs."""
    import_logger = logging.getLogger("bitsandbytes.backends.cpu.ops")

    def quiet(record: logging.LogRecord) -> bool:
        return "kernels" not in record.getMessage()

    import_logger.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import bitsandbytes
    finally:
        import_logger.removeFilter(quiet)
    call_logger = logging.getLogger("bitsandbytes.autograd._functions")
    if _drop_cast_notice not in call_logger.filters:
        call_logger.addFilter(_drop_cast_notice)
    return bitsandbytes


class _BnbLinear(nn.Module):
    """A bitsandbytes layer built without bias; the bias is kept here as an fp32 master, because
    bitsandbytes casts its own bias *in place* to each input's dtype (one bf16 call would round it)."""

    inner: nn.Module

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_parameter("bias", _float_bias(linear))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = self.inner(input).to(input.dtype)
        return out + self.bias.to(input.dtype) if self.bias is not None else out


class Bnb8bitLinear(_BnbLinear):
    """LLM.int8: row-wise int8 weights (one fp32 absmax per output row); inputs are cast to fp16 and
    quantised per row, and input columns whose magnitude exceeds `threshold` run in fp16 instead.
    On CPU both fp32 and bf16 inputs work (eval mode; in train mode bitsandbytes dequantises instead)."""

    def __init__(self, linear: nn.Linear, threshold: float) -> None:
        super().__init__(linear)
        bnb = _bitsandbytes()
        self.threshold = threshold
        inner = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=False, has_fp16_weights=False, threshold=threshold)
        weight = linear.weight.detach().to(torch.float32).cpu().clone()
        inner.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
        self.inner = inner.to(linear.weight.device)  # moving the Int8Params is what quantises them

    def storage_bytes(self) -> int:
        return self.in_features * self.out_features + 4 * self.out_features + _tensor_bytes(self.bias)


class Bnb4bitLinear(_BnbLinear):
    """NF4 / FP4 codes, two per byte, one fp32 absmax per `blocksize` weights (no double quantisation,
    as in transformers' default `load_in_4bit`). On a CPU with AVX512-BF16 the eval-mode no-grad path
    repacks the weight and computes in bf16 whatever the input dtype; the output is cast back."""

    def __init__(self, linear: nn.Linear, quant_type: str, blocksize: int) -> None:
        super().__init__(linear)
        bnb = _bitsandbytes()
        self.quant_type, self.blocksize = quant_type, blocksize
        inner = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=False, quant_type=quant_type, compress_statistics=False)
        inner.weight = bnb.nn.Params4bit(
            linear.weight.detach().to(torch.float32).cpu().clone(), requires_grad=False, quant_type=quant_type,
            blocksize=blocksize, compress_statistics=False,
        )
        self.inner = inner.to(linear.weight.device)  # quantises on the move
        if linear.in_features % blocksize or linear.out_features % 32:
            # bnb's AVX512-BF16 repacking assumes whole blocks per row and 32-row tiles and fails
            # otherwise (e.g. a token mixer over 82 positions); the generic dequantise-and-matmul path
            # handles any shape.
            self.inner.support_avx512bf16_for_cpu = False
        # Counted now: the CPU fast path later repacks the weight into a kernel-specific layout.
        numel = linear.in_features * linear.out_features
        self._storage = math.ceil(numel / 2) + _tensor_bytes(self.inner.weight.quant_state.absmax) + _tensor_bytes(self.bias)

    def storage_bytes(self) -> int:
        return self._storage


# -- registry ---------------------------------------------------------------------------------------
Handler = Callable[[nn.Linear, Any], nn.Module]
_HANDLERS: dict[type, Handler] = {
    Int8ChannelWeights: lambda lin, spec: QuantizedLinear.from_linear(lin, 8, granularity="per_channel", symmetric=True),
    IntWeights: lambda lin, spec: QuantizedLinear.from_linear(
        lin, spec.bits, granularity=spec.granularity, symmetric=spec.symmetric, group_size=spec.group_size
    ),
    Int4Weights: lambda lin, spec: QuantizedLinear.from_linear(
        lin, 4, granularity=spec.granularity, symmetric=spec.symmetric, group_size=spec.group_size
    ),
    Int8DynamicWeights: lambda lin, spec: DynamicInt8Linear(lin),
    Int8BnbWeights: lambda lin, spec: Bnb8bitLinear(lin, spec.threshold),
    BnbFourBitWeights: lambda lin, spec: Bnb4bitLinear(lin, spec.method, spec.blocksize),
}


def _move_hooks(old: nn.Module, new: nn.Module) -> None:
    # Hooks installed by earlier passes (fp16 rounding of inputs and outputs) belong to the position
    # in the network, not to the storage format.
    for attr in ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs"):
        getattr(new, attr).update(getattr(old, attr))


def quantize_weights(model: nn.Module, spec: WeightSpec, *, include: list[str], exclude: list[str]) -> list[str]:
    """Swap, in place, every `nn.Linear` selected by the globs for its quantised counterpart.

    Args:
        model: mutated in place (the caller deep-copies the reference first).
        spec: one of the weight specs (`Int8ChannelWeights`, `Int4Weights`, ...).
        include: globs over dotted module names (the full name or any dotted suffix), e.g. `*`, `*mlp_t*`.
        exclude: globs kept in full precision, e.g. `lm_head`, `q_head`.
    Returns:
        The qualified names of the swapped layers, in module order.
    Raises:
        ValueError: nothing matched.
        TypeError: a spec with no registered handler.
    """
    handler = _HANDLERS.get(type(spec))
    if handler is None:
        raise TypeError(f"weights: no quantiser for {type(spec).__name__}")
    layers = select_linears(model, include, exclude)
    if not layers:
        raise ValueError(f"include/exclude matched no Linear layer: include={include}, exclude={exclude}")
    for name, layer in layers.items():
        new = handler(layer, spec)
        _move_hooks(layer, new)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, new)
    return list(layers)
