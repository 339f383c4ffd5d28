"""The engine's fast numerics: the same maths as the official step, differing by rounding only.

`Numerics` is what a job runs: `exact` is the official eager step (bit-identical to the official
code at every step, the tests' oracle); `fast` (the default) is

- the MLP token mixer computed without transposes. The official block transposes the carry to
  `[B, D, T]`, mixes along T with two Linears, and transposes back; here the mixer's weights
  left-multiply the `[B, T, D]` carry (`W @ h`, one batched GEMM per Linear) and the norm runs over
  the token axis in place, so no layout copy is made between blocks. Only blocks whose token-mixer
  Linears are plain weight matrices with no hooks (`CastedLinear`, weight-only `QuantizedLinear`)
  are rewritten; bitsandbytes, dynamic-int8 and fake-quantised-activation layers keep the official
  block, because their arithmetic lives in their own forward;
- one `torch.compile`d step function shared by the reference and every candidate: parameters are
  graph inputs, so models of one structure reuse one graph (norm + cast fused around the GEMMs), and
  the compile cost is paid once per structure, not once per model. Compiling costs ~20 s per
  structure on this CPU, so `compile_pays` turns it on only for jobs large enough to earn it back.

`fast_layout(model)` is pure: it returns a shallow copy sharing every parameter and buffer with
`model`, with the eligible blocks re-classed; `model` is untouched (its footprint, export and
state dict stay the official ones).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from carrygate.models.layers import CastedLinear, CosSin, ReasoningBlock, SwiGLU, rms_norm
from carrygate.models.reasoner import Carry, StepOutput

__all__ = ["LeftMixBlock", "compile_pays", "fast_layout", "fast_step"]

# A job is compiled when its eager work is at least this many GFLOP (reference + candidates): at the
# ~60-150 GFLOP/s eager rate of this CPU that is about a minute, against ~20 s of compilation per
# structure (bench/engine_step.py prints both).
COMPILE_MIN_GFLOP = 6000.0

M = TypeVar("M", bound=nn.Module)


def _plain_linear(linear: nn.Module) -> bool:
    """A Linear whose whole arithmetic is `input @ weight.T` in the input dtype, with nothing hooked."""
    from carrygate.models.compress.weights import QuantizedLinear  # compress builds on the model files, not the reverse

    hooked = bool(linear._forward_hooks or linear._forward_pre_hooks)
    return isinstance(linear, CastedLinear | QuantizedLinear) and not hooked and linear.bias is None


def _token_mix_left(mixer: SwiGLU, hidden: torch.Tensor) -> torch.Tensor:
    """The SwiGLU token mixer on `[B, T, D]`: `W_down @ (silu(W_gate @ h) * (W_up @ h))`."""
    gate_up = torch.matmul(mixer.gate_up_proj.weight.to(hidden.dtype), hidden)  # (B, 2I, D)
    gate, up = gate_up.chunk(2, dim=1)
    return torch.matmul(mixer.down_proj.weight.to(hidden.dtype), torch.nn.functional.silu(gate) * up)  # (B, T, D)


def _token_norm(hidden: torch.Tensor, eps: float) -> torch.Tensor:
    """`rms_norm` over the token axis of `[B, T, D]` (the official block's norm of the transposed carry)."""
    dtype = hidden.dtype
    hidden = hidden.to(torch.float32)
    return (hidden * torch.rsqrt(hidden.square().mean(1, keepdim=True) + eps)).to(dtype)


class LeftMixBlock(ReasoningBlock):
    """A `ReasoningBlock` with an MLP token mixer, run in `[B, T, D]` throughout (see the module docstring)."""

    def forward(self, hidden: torch.Tensor, cos_sin: CosSin | None) -> torch.Tensor:
        assert self.mlp_t is not None
        hidden = _token_norm(hidden + _token_mix_left(self.mlp_t, hidden), self.eps)
        return rms_norm(hidden + self.mlp(hidden), self.eps)


def _left_mix_eligible(block: nn.Module) -> bool:
    if type(block) is not ReasoningBlock or block.mlp_t is None or block._forward_hooks or block._forward_pre_hooks:
        return False
    mixer = block.mlp_t
    return not (mixer._forward_hooks or mixer._forward_pre_hooks) and all(
        _plain_linear(linear) for linear in (mixer.gate_up_proj, mixer.down_proj))


def _shallow_copy(module: M) -> M:
    """A new module object sharing parameters, buffers and hooks with `module`, with its own child table."""
    clone = module.__class__.__new__(module.__class__)
    clone.__dict__ = module.__dict__.copy()
    clone._modules = dict(module._modules)
    return clone


def fast_layout(model: M) -> M:
    """`model` with every eligible MLP-mixer block as a `LeftMixBlock`; `model` itself unchanged.
    Returns `model` itself when no block is eligible (attention models, hooked candidates)."""
    paths = [name for name, module in model.named_modules() if _left_mix_eligible(module)]
    if not paths:
        return model
    root = _shallow_copy(model)
    for path in paths:
        *parents, leaf = path.split(".")
        owner: nn.Module = root
        for name in parents:  # copy the chain down to the block, so the original's children stay put
            child = _shallow_copy(owner._modules[name])
            owner._modules[name] = child
            owner = child
        block = _shallow_copy(owner._modules[leaf])
        block.__class__ = LeftMixBlock
        owner._modules[leaf] = block
    return root


def _step(model: nn.Module, carry: Carry, x: torch.Tensor, step_index: int) -> StepOutput:
    return model.step(carry, x, step_index)


_compiled: Callable[..., StepOutput] | None = None


def shared_compiled_step() -> Callable[..., StepOutput]:
    """The one compiled step of the process: models of one structure share its graph."""
    global _compiled
    if _compiled is None:
        # every candidate structure (precision, quantised layers) is its own graph; allow a sweep's worth
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        _compiled = torch.compile(_step, dynamic=False)
    return _compiled


def fast_step(model: Any, compile_step: bool) -> Callable[[Carry, Any, int], StepOutput]:
    """The fast step of a torch model (a `RecursiveReasoner` or a `CompressedCandidate` over one);
    other stepped models (an ONNX Runtime file) keep their own step."""
    from carrygate.models.compress.candidate import CompressedCandidate

    inner_model = model.model if isinstance(model, CompressedCandidate) else model
    if not isinstance(inner_model, nn.Module):
        return model.step
    fast = fast_layout(inner_model)
    if compile_step:
        compiled = shared_compiled_step()

        def inner(carry: Carry, x: Any, t: int) -> StepOutput:
            return compiled(fast, carry, x, t)
    else:
        inner = fast.step
    if isinstance(model, CompressedCandidate):
        return lambda carry, x, t: model.step_through(inner, carry, x, t)
    return inner


def compile_pays(gflop: float) -> bool:
    """Whether a job of `gflop` eager GFLOP earns back compiling its structures."""
    return gflop >= COMPILE_MIN_GFLOP
