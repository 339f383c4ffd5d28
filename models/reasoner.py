"""What TRM and HRM share: input embedding, output heads, the carry and the ACT step loop.

The stepwise interface is what the trajectory engine drives:

    carry = model.initial_carry(batch_size)          # z_H = H_init, z_L = L_init everywhere
    x = model.input_embeddings(inputs, puzzle_ids)   # computed once per batch
    out = model.step(carry, x)                       # one ACT step -> StepOutput
    for out in model.steps(inputs, puzzle_ids): ...  # all halt_max_steps steps

Evaluation semantics are the official ones (TRM_FACTS §3.2, §11.11): every sequence runs exactly
`halt_max_steps` ACT steps, the carry is reset only before the first, predictions come from the last.
The official code recomputes the input embedding each ACT step; it is a pure function of the batch,
so computing it once gives identical numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from carrygate.models.config import ReasonerConfigBase
from carrygate.models.layers import CastedEmbedding, CastedLinear, CosSin, PuzzleEmbedding, RotaryEmbedding, trunc_normal_init_


class Carry(NamedTuple):
    z_H: torch.Tensor  # (B, T, D), forward dtype: the answer-bearing state
    z_L: torch.Tensor  # (B, T, D), forward dtype: the latent reasoning state


class StepOutput(NamedTuple):
    carry: Carry
    logits: torch.Tensor  # (B, seq_len, vocab), forward dtype, puzzle prefix dropped
    q_halt_logits: torch.Tensor  # (B,) float32
    q_continue_logits: torch.Tensor  # (B,) float32


class RecursiveReasoner(nn.Module):
    """Base class; subclasses implement `recurse`, the inner loop of one ACT step."""

    config: ReasonerConfigBase

    def __init__(self, config: ReasonerConfigBase) -> None:
        super().__init__()
        self.config = config
        dtype = config.torch_dtype
        D = config.hidden_size
        self.embed_scale = math.sqrt(D)
        self.prefix_len = config.puzzle_prefix_len
        # Compression state (carry codec, half storage, per-step quantisers) is not kept here: it is
        # `models.compress.candidate.CompressedCandidate`'s, so a module never carries hidden state.

        # Buffers first: the official state_dict lists H_init/L_init before the child modules.
        # They are random, never trained, and must come from the checkpoint.
        self.register_buffer("H_init", trunc_normal_init_(torch.empty(D, dtype=dtype), std=1), persistent=True)
        self.register_buffer("L_init", trunc_normal_init_(torch.empty(D, dtype=dtype), std=1), persistent=True)

        self.embed_tokens = CastedEmbedding(config.vocab_size, D, init_std=1.0 / self.embed_scale, cast_to=dtype)
        self.lm_head = CastedLinear(D, config.vocab_size, bias=False)
        self.q_head = CastedLinear(D, 2, bias=True)
        with torch.no_grad():  # Q starts near "never halt", as in the official init
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)

        self.puzzle_emb: PuzzleEmbedding | None = None
        if config.puzzle_emb_ndim > 0:
            self.puzzle_emb = PuzzleEmbedding(config.num_puzzle_identifiers, config.puzzle_emb_ndim, cast_to=dtype)

        self.rotary_emb: RotaryEmbedding | None = None
        self.embed_pos: CastedEmbedding | None = None
        if config.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(D // config.num_heads, config.total_len, config.rope_theta)
        elif config.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(config.total_len, D, init_std=1.0 / self.embed_scale, cast_to=dtype)

    # -- subclass hook -------------------------------------------------------------------------
    def recurse(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor, cos_sin: CosSin | None) -> Carry:
        raise NotImplementedError

    # -- interface -----------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.config.torch_dtype

    @property
    def device(self) -> torch.device:
        return self.H_init.device

    def input_embeddings(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor:
        """(B, seq_len) token ids + (B,) puzzle ids -> (B, T, D) scaled input embedding x."""
        puzzle = self.puzzle_emb(puzzle_identifiers.to(torch.long)) if self.puzzle_emb is not None else None
        return self.embed_with_puzzle_rows(inputs, puzzle)

    def embed_with_puzzle_rows(self, inputs: torch.Tensor, puzzle: torch.Tensor | None) -> torch.Tensor:
        """`input_embeddings` with the puzzle-table rows (B, puzzle_emb_ndim) already looked up — the
        flash-row deployment, where the host streams one row per puzzle into the exported step."""
        embedding = self.embed_tokens(inputs.to(torch.int32))  # (B, seq_len, D)
        if puzzle is not None:
            pad = self.prefix_len * self.config.hidden_size - puzzle.shape[-1]
            if pad > 0:
                puzzle = F.pad(puzzle, (0, pad))
            puzzle = puzzle.view(-1, self.prefix_len, self.config.hidden_size)  # (B, P, D)
            embedding = torch.cat((puzzle, embedding), dim=-2)  # (B, T, D)
        if self.embed_pos is not None:
            # 1/sqrt(2) keeps the forward variance; the constant is the official literal.
            embedding = 0.707106781 * (embedding + self.embed_pos.embedding_weight.to(self.dtype))
        return self.embed_scale * embedding

    def initial_carry(self, batch_size: int) -> Carry:
        T, D = self.config.total_len, self.config.hidden_size
        return Carry(
            z_H=self.H_init.expand(batch_size, T, D).clone(),
            z_L=self.L_init.expand(batch_size, T, D).clone(),
        )

    def heads(self, z_H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.lm_head(z_H)[:, self.prefix_len :]  # (B, seq_len, vocab)
        q = self.q_head(z_H[:, 0]).to(torch.float32)  # (B, 2), from the first prefix position
        return logits, q[..., 0], q[..., 1]

    def step(self, carry: Carry, x: torch.Tensor, step_index: int = 0) -> StepOutput:
        """One ACT step from `carry` with input embedding `x`. The step itself does not depend on
        `step_index`; it is part of the `SteppedModel` interface for models whose steps differ."""
        del step_index
        cos_sin = self.rotary_emb() if self.rotary_emb is not None else None
        new = self.recurse(carry.z_H, carry.z_L, x, cos_sin)
        logits, q_halt, q_continue = self.heads(new.z_H)  # heads see the graph, for training
        return StepOutput(Carry(new.z_H.detach(), new.z_L.detach()), logits, q_halt, q_continue)

    def steps(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor, n_steps: int | None = None) -> Iterator[StepOutput]:
        """All ACT steps of the official evaluation loop (default `halt_max_steps`)."""
        return host_loop(self, inputs, puzzle_identifiers, n_steps)

    def forward(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> StepOutput:
        """Full evaluation: the output of the last ACT step."""
        *_, last = self.steps(inputs, puzzle_identifiers)
        return last


class SteppedModel(Protocol):
    """What the host loop and the lockstep engine use of a model: a `RecursiveReasoner`, an exported
    step file run by ONNX Runtime, or a `models.compress.candidate.CompressedCandidate` over either."""

    config: Any

    def input_embeddings(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> Any: ...  # a tensor, or host inputs

    def initial_carry(self, batch_size: int) -> Carry: ...

    def step(self, carry: Carry, x: Any, step_index: int) -> StepOutput: ...


def host_loop(model: SteppedModel, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor,
              n_steps: int | None = None) -> Iterator[StepOutput]:
    """The ACT loop as a host runs it: embed once, then feed each step the carry the last one returned.
    Shared by the PyTorch model and an exported step file run by ONNX Runtime (`models.export.OrtReasoner`)."""
    x = model.input_embeddings(inputs, puzzle_identifiers)
    carry = model.initial_carry(inputs.shape[0])
    for t in range(n_steps or model.config.halt_max_steps):
        out = model.step(carry, x, t)
        carry = out.carry
        yield out
