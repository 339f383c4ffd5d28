"""Typed configs of the recursive reasoners carrygate serves.

Field names and defaults are those of the official pydantic configs
(TRM: `TinyRecursiveReasoningModel_ACTV1Config`, HRM: `HierarchicalReasoningModel_ACTV1Config`), so
an `arch:` block of an official `all_config.yaml` maps onto them one to one. Unlike the official
classes, unknown keys are rejected (`extra="forbid"`): a misspelled key must not vanish silently.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

ForwardDtype = Literal["float32", "bfloat16", "float16"]
PosEncodings = Literal["rope", "learned", "none"]


def find_multiple(a: int, b: int) -> int:
    """Smallest multiple of b that is >= a (the official `_find_multiple`)."""
    return -(a // -b) * b


def swiglu_intermediate(width: int, expansion: float) -> int:
    # Official rule: round(2/3 * e * width) rounded up to a multiple of 256.
    return find_multiple(round(expansion * width * 2 / 3), 256)


class ReasonerConfigBase(BaseModel):
    """The fields TRM and HRM share: the base of both configs, never a config of its own (`ModelConfig` is their union)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq_len: int = Field(gt=0, description="Task tokens per example (81 Sudoku, 900 Maze/ARC).")
    vocab_size: int = Field(gt=0)
    num_puzzle_identifiers: int = Field(ge=1)
    puzzle_emb_ndim: int = Field(0, ge=0)

    H_cycles: int = Field(ge=1)
    L_cycles: int = Field(ge=1)
    L_layers: int = Field(ge=1)
    hidden_size: int = Field(gt=0)
    expansion: float = Field(gt=0)
    num_heads: int = Field(ge=1)
    pos_encodings: PosEncodings = "rope"
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    halt_max_steps: int = Field(ge=1)
    halt_exploration_prob: float = Field(0.1, ge=0, le=1)
    forward_dtype: ForwardDtype = "bfloat16"

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ReasonerConfigBase:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        return self

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.forward_dtype)

    @property
    def puzzle_prefix_len(self) -> int:
        """P: number of puzzle-embedding positions prepended to the sequence."""
        return math.ceil(self.puzzle_emb_ndim / self.hidden_size)

    @property
    def total_len(self) -> int:
        """T = P + seq_len: length of the carry along the token axis."""
        return self.seq_len + self.puzzle_prefix_len


class TRMConfig(ReasonerConfigBase):
    """Tiny Recursive Model (Jolicoeur-Martineau 2025)."""

    arch: Literal["trm"] = "trm"
    mlp_t: bool = False
    # 0 means ceil(puzzle_emb_ndim / hidden_size), as in the official code; TRM's default is 16.
    puzzle_emb_len: int = Field(16, ge=0)
    no_ACT_continue: bool = True

    @property
    def puzzle_prefix_len(self) -> int:
        if self.puzzle_emb_len == 0:
            return math.ceil(self.puzzle_emb_ndim / self.hidden_size)
        return self.puzzle_emb_len

    @model_validator(mode="after")
    def _prefix_holds_embedding(self) -> TRMConfig:
        if self.puzzle_emb_ndim > self.puzzle_prefix_len * self.hidden_size:
            raise ValueError(
                f"puzzle_emb_ndim {self.puzzle_emb_ndim} does not fit in puzzle_emb_len "
                f"{self.puzzle_prefix_len} x hidden_size {self.hidden_size}"
            )
        return self


class HRMConfig(ReasonerConfigBase):
    """Hierarchical Reasoning Model (Wang et al. 2025): separate H and L modules."""

    arch: Literal["hrm"] = "hrm"
    H_layers: int = Field(ge=1)
    pos_encodings: Literal["rope", "learned"] = "rope"  # the official HRM raises on anything else


ModelConfig = Annotated[TRMConfig | HRMConfig, Field(discriminator="arch")]
