"""Models the search runs through the unchanged lockstep engine (`models/trajectory.py`).

- `Replay` records a model's step outputs per probe batch on first use and replays them afterwards:
  the reference (and the noise floor) run once for the whole search, however many rounds it takes.
- `FromStep` runs the reference for steps < `start` and a compressed model from `start` on: the
  sensitivity map's "compress only from step s on". It is a measurement, not a deployable spec.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from carrygate.models.reasoner import Carry, StepOutput, SteppedModel


def batch_key(inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> str:
    """Content key of a batch: the engine builds fresh tensors per run, so identity cannot be used."""
    digest = hashlib.sha1(inputs.contiguous().numpy().tobytes())
    digest.update(puzzle_identifiers.contiguous().numpy().tobytes())
    return f"{tuple(inputs.shape)}:{digest.hexdigest()}"


class Replay:
    """A `SteppedModel` that computes each batch's trajectory once, then replays it.

    The engine calls `input_embeddings` once per batch before stepping, so that call selects the
    batch; `step` recomputes only when the batch or step was never seen (or the carry it is given is
    not the one it returned, which would mean a caller not walking the host loop)."""

    def __init__(self, model: SteppedModel) -> None:
        self.model = model
        self._steps: dict[str, list[StepOutput]] = {}
        self._key: str | None = None
        self.computed_steps = 0
        self.replayed_steps = 0

    @property
    def config(self) -> Any:
        return self.model.config

    def input_embeddings(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> tuple[str, Any]:
        self._key = batch_key(inputs, puzzle_identifiers)
        return self._key, self.model.input_embeddings(inputs, puzzle_identifiers)

    def initial_carry(self, batch_size: int) -> Carry:
        return self.model.initial_carry(batch_size)

    def step(self, carry: Carry, x: tuple[str, Any], step_index: int) -> StepOutput:
        key, embedding = x
        seen = self._steps.setdefault(key, [])
        if step_index < len(seen) and (step_index == 0 or seen[step_index - 1].carry is carry):
            self.replayed_steps += 1
            return seen[step_index]
        out = self.model.step(carry, embedding, step_index)
        if step_index == len(seen):
            seen.append(out)
        self.computed_steps += 1
        return out


class FromStep:
    """Reference steps before `start`, compressed steps from `start` on (same carry shapes). Each side
    runs its own step: a compressed candidate applies its carry codec there, the reference none."""

    def __init__(self, reference: SteppedModel, compressed: SteppedModel, start: int) -> None:
        if compressed.config.total_len != reference.config.total_len or compressed.config.hidden_size != reference.config.hidden_size:
            raise ValueError("FromStep: the compressed model's carry shape differs from the reference's")
        self.reference, self.compressed, self.start = reference, compressed, start

    @property
    def config(self) -> Any:
        return self.compressed.config

    def input_embeddings(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> tuple[Any, Any]:
        return self.reference.input_embeddings(inputs, puzzle_identifiers), self.compressed.input_embeddings(inputs, puzzle_identifiers)

    def initial_carry(self, batch_size: int) -> Carry:
        return (self.compressed if self.start == 0 else self.reference).initial_carry(batch_size)

    def step(self, carry: Carry, x: tuple[Any, Any], step_index: int) -> StepOutput:
        if step_index < self.start:
            return self.reference.step(carry, x[0], step_index)
        return self.compressed.step(carry, x[1], step_index)
