"""`CompressedCandidate`: what `models.compress.apply` returns.

A candidate is the model that steps (a `RecursiveReasoner`, or for an `onnxruntime` spec the
`OrtReasoner` over the file) plus the compression state the tensors do not show: the host-side carry
codec, the deployed-bytes facts the footprint counts (`Storage`), the per-step activation quantisers
that must be told the ACT step, and for an ONNX Runtime file its `OnnxArtifact` and the float model
it was built from. None of it lives on the modules, so a model never carries hidden state from one
candidate to the next.

It is a `SteppedModel` (`models.reasoner`): the lockstep engine, `host_loop` and the recommend
replay drive it like a model. Running `candidate.model` directly skips the carry codec and the
per-step quantisers' step index; run the candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from carrygate.models.compress.carry import CarryCodec
from carrygate.models.reasoner import Carry, RecursiveReasoner, StepOutput, host_loop
from carrygate.models.results import OnnxArtifact

if TYPE_CHECKING:
    from carrygate.models.export import OrtReasoner

StepFn = Callable[[Carry, Any, int], StepOutput]


@dataclass(frozen=True)
class Storage:
    """Deployed-bytes facts the tensors do not show (read by `models.footprint`)."""

    half: torch.dtype | None = None  # emulated half precision: floats stored at 2 bytes, computed in fp32
    puzzle_table_bytes: int | None = None  # bytes of the compressed puzzle table (None: as its tensor)
    puzzle_rows_streamed: bool = False  # flash-row: only the current puzzle's row leaves flash


class StepAware(Protocol):
    """Something inside the model that must know the ACT step it runs in (per-step activation ranges)."""

    def at_step(self, step_index: int) -> AbstractContextManager[None]: ...


@dataclass(frozen=True, eq=False)  # eq=False: identity, as for the modules it wraps (the engine keys on id)
class CompressedCandidate:
    """A compressed model as data; see the module docstring."""

    model: RecursiveReasoner | OrtReasoner
    carry_codec: CarryCodec | None = None
    storage: Storage = Storage()
    notes: tuple[str, ...] = ()  # what a report should say about how it runs (an emulated half precision)
    artifact: OnnxArtifact | None = None
    float_model: RecursiveReasoner | None = None  # the torch model an ORT file was built from
    step_aware: tuple[StepAware, ...] = ()

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def source_model(self) -> RecursiveReasoner:
        """The PyTorch model whose tensors the footprint counts: the model, or an ORT file's float model."""
        if self.float_model is not None:
            return self.float_model
        assert isinstance(self.model, RecursiveReasoner), "an ORT candidate records its float model"
        return self.model

    def input_embeddings(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> Any:
        return self.model.input_embeddings(inputs, puzzle_identifiers)

    def initial_carry(self, batch_size: int) -> Carry:
        return self.model.initial_carry(batch_size)

    def step(self, carry: Carry, x: Any, step_index: int = 0) -> StepOutput:
        """One ACT step. `carry` is the previous step's output: the host stores it through the carry
        codec between steps, so the codec is applied here, on entry, from the second step on."""
        return self.step_through(self.model.step, carry, x, step_index)

    def step_through(self, inner: StepFn, carry: Carry, x: Any, step_index: int) -> StepOutput:
        """`step` with the model's own step replaced by `inner` (e.g. its `torch.compile`d form)."""
        if step_index > 0 and self.carry_codec is not None:
            carry = self.carry_codec(carry)
        with ExitStack() as stack:
            for quantiser in self.step_aware:
                stack.enter_context(quantiser.at_step(step_index))
            return inner(carry, x, step_index)

    def steps(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor, n_steps: int | None = None) -> Iterator[StepOutput]:
        """All ACT steps of the official evaluation loop (default `halt_max_steps`)."""
        return host_loop(self, inputs, puzzle_identifiers, n_steps)

    def __call__(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> StepOutput:
        """Full evaluation, as `RecursiveReasoner.forward`: the output of the last ACT step."""
        *_, last = self.steps(inputs, puzzle_identifiers)
        return last
