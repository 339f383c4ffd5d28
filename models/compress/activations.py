"""Activation fake-quantisation of Linear inputs, calibrated on probe puzzles.

TRM/HRM blocks are weight-shared and run H x (L+1) times per ACT step, over 16 steps; activation
ranges drift along the recursion. A generic observer pools every call into one range; here the
observer keeps (min, max) per layer *and per ACT step*, so `ranges: per_step` quantises step t with
step t's range, while `ranges: pooled` reproduces the generic tools' single range.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import torch
from torch import nn

from carrygate.models.compress.scope import select_linears
from carrygate.models.compress.spec import ActivationSpec
from carrygate.models.reasoner import RecursiveReasoner


class StepRangeObserver:
    """Running min/max of a layer's input, keyed by the model's current ACT step."""

    def __init__(self, model: RecursiveReasoner) -> None:
        self.model = model
        self.ranges: dict[int, tuple[float, float]] = {}

    def __call__(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach()
        lo, hi = float(x.min()), float(x.max())
        step = self.model.step_index
        old = self.ranges.get(step)
        self.ranges[step] = (min(lo, old[0]), max(hi, old[1])) if old else (lo, hi)

    def pooled(self) -> tuple[float, float]:
        return min(r[0] for r in self.ranges.values()), max(r[1] for r in self.ranges.values())


def fake_quantize(x: torch.Tensor, lo: float, hi: float, bits: int, symmetric: bool) -> torch.Tensor:
    x32 = x.float()
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = max(abs(lo), abs(hi), 1e-12) / qmax
        q = torch.round(x32 / scale).clamp(-qmax, qmax)
        return (q * scale).to(x.dtype)
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero must be representable exactly
    qmax = 2**bits - 1
    scale = max(hi - lo, 1e-12) / qmax
    zero = round(-lo / scale)
    q = torch.round(x32 / scale + zero).clamp(0, qmax)
    return ((q - zero) * scale).to(x.dtype)


def _quantize_input(
    observer: StepRangeObserver, spec: ActivationSpec, _module: nn.Module, inputs: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    step = observer.model.step_index
    if spec.ranges == "per_step" and step in observer.ranges:
        lo, hi = observer.ranges[step]
    else:  # pooled, or a step beyond those calibrated (e.g. a deeper candidate): the pooled range
        lo, hi = observer.pooled()
    return (fake_quantize(inputs[0], lo, hi, spec.bits, spec.symmetric), *inputs[1:])


@torch.inference_mode()
def quantize_activations_(
    model: RecursiveReasoner,
    spec: ActivationSpec,
    calibration: Iterable[tuple[torch.Tensor, torch.Tensor]],
    include: list[str],
    exclude: list[str],
) -> dict[str, StepRangeObserver]:
    """Calibrate on `calibration` batches of (inputs, puzzle ids), then install fake-quantisers."""
    layers = select_linears(model, include, exclude)
    if not layers:
        raise ValueError("activations: include/exclude matched no Linear layer")
    observers = {name: StepRangeObserver(model) for name in layers}
    handles = [layer.register_forward_pre_hook(observers[name]) for name, layer in layers.items()]
    seen = 0
    for inputs, ids in calibration:
        take = min(len(inputs), spec.calibration_puzzles - seen)
        if take <= 0:
            break
        for _ in model.steps(inputs[:take], ids[:take]):
            pass
        seen += take
    for handle in handles:
        handle.remove()
    if seen == 0:
        raise ValueError("activations: calibration needs probe puzzles, none were given")
    for name, layer in layers.items():
        layer.register_forward_pre_hook(partial(_quantize_input, observers[name], spec))
    return observers
