"""Activation fake-quantisation of Linear inputs, calibrated on probe puzzles.

TRM/HRM blocks are weight-shared and run H x (L+1) times per ACT step, over 16 steps; activation
ranges drift along the recursion. A generic observer pools every call into one range; here the
observer keeps (min, max) per layer *and per ACT step*, so `ranges: per_step` quantises step t with
step t's range, while `ranges: pooled` reproduces the generic tools' single range.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn

from carrygate.models.compress.scope import select_linears
from carrygate.models.compress.spec import ActivationSpec
from carrygate.models.reasoner import RecursiveReasoner


class StepRangeObserver:
    """Running min/max of a layer's input, keyed by the ACT step its `ActivationQuantisers` is told."""

    def __init__(self, clock: ActivationQuantisers) -> None:
        self.clock = clock
        self.ranges: dict[int, tuple[float, float]] = {}

    def __call__(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach()
        lo, hi = float(x.min()), float(x.max())
        step = self.clock.current_step()
        old = self.ranges.get(step)
        self.ranges[step] = (min(lo, old[0]), max(hi, old[1])) if old else (lo, hi)

    def pooled(self) -> tuple[float, float]:
        return min(r[0] for r in self.ranges.values()), max(r[1] for r in self.ranges.values())


class ActivationQuantisers:
    """One candidate's activation observers and fake-quantisers, and the ACT step they are in.

    The step is told explicitly (`at_step`) by whoever runs it — the candidate's `step`, or the
    calibration loop — rather than read off the model, so the model holds no step state."""

    def __init__(self) -> None:
        self.observers: dict[str, StepRangeObserver] = {}
        self._step: int | None = None

    def __getitem__(self, name: str) -> StepRangeObserver:
        return self.observers[name]

    @contextmanager
    def at_step(self, step_index: int) -> Iterator[None]:
        previous, self._step = self._step, step_index
        try:
            yield
        finally:
            self._step = previous

    def current_step(self) -> int:
        if self._step is None:  # a quantised layer ran outside a step: run the candidate, not its bare model
            raise RuntimeError("activation quantisers need the ACT step: run the model through CompressedCandidate.step")
        return self._step


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
    step = observer.clock.current_step()
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
) -> ActivationQuantisers:
    """Calibrate on `calibration` batches of (inputs, puzzle ids), then install fake-quantisers.
    Returns them: whoever steps the model tells them the step (`CompressedCandidate.step_aware`)."""
    layers = select_linears(model, include, exclude)
    if not layers:
        raise ValueError("activations: include/exclude matched no Linear layer")
    quantisers = ActivationQuantisers()
    observers = quantisers.observers
    observers.update({name: StepRangeObserver(quantisers) for name in layers})
    handles = [layer.register_forward_pre_hook(observers[name]) for name, layer in layers.items()]
    seen = 0
    for inputs, ids in calibration:
        take = min(len(inputs), spec.calibration_puzzles - seen)
        if take <= 0:
            break
        _calibrate(model, quantisers, inputs[:take], ids[:take])
        seen += take
    for handle in handles:
        handle.remove()
    if seen == 0:
        raise ValueError("activations: calibration needs probe puzzles, none were given")
    for name, layer in layers.items():
        layer.register_forward_pre_hook(partial(_quantize_input, observers[name], spec))
    return quantisers


def _calibrate(model: RecursiveReasoner, quantisers: ActivationQuantisers, inputs: torch.Tensor, ids: torch.Tensor) -> None:
    """The host loop over one calibration batch, each step under its own index (no carry codec yet:
    activations are calibrated before the carry part of a spec is applied)."""
    x = model.input_embeddings(inputs, ids)
    carry = model.initial_carry(inputs.shape[0])
    for t in range(model.config.halt_max_steps):
        with quantisers.at_step(t):
            carry = model.step(carry, x, t).carry
