"""Metrics as pure tensor functions.

Task metrics follow the official `losses.py` (TRM_FACTS §3.5):
- cell accuracy = mean over puzzles of (correct tokens / scored tokens) — a *per-sequence* mean,
  not pooled over tokens; positions labelled -100 are not scored; puzzles with no scored token
  (padding rows) are not counted;
- puzzle-exact = share of those puzzles whose every scored token is right.

Label-free trajectory metrics (DESIGN.md "Definitions") compare a candidate's carry with the
reference's, token by token, accumulated in float64.
"""

from __future__ import annotations

import torch

from carrygate.models.tasks.dataset import IGNORE_LABEL_ID


def cells_correct(preds: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S) predictions and labels -> (right scored cells per puzzle, scored cells per puzzle)."""
    mask = labels != IGNORE_LABEL_ID
    return (mask & (preds == labels)).sum(-1), mask.sum(-1)


def per_puzzle_accuracy(preds: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, S) predictions and labels -> (cell accuracy per puzzle, exact per puzzle, valid mask)."""
    correct, counts = cells_correct(preds, labels)
    valid = counts > 0
    accuracy = torch.where(valid, correct.float() / counts.clamp_min(1).float(), torch.zeros_like(counts, dtype=torch.float32))
    exact = valid & (correct == counts)
    return accuracy, exact, valid


def task_accuracy(preds: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Official `accuracy` and `exact_accuracy` over one set of predictions."""
    accuracy, exact, valid = per_puzzle_accuracy(preds, labels)
    n = int(valid.sum())
    return {
        "count": n,
        "cell_accuracy": float(accuracy[valid].sum() / max(n, 1)),
        "puzzle_exact": float(exact.sum() / max(n, 1)),
    }


def token_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(B, T, D) x (B, T, D) -> (B, T) cosine per token position, accumulated in float64.

    float64 makes a carry compared with itself come out at exactly 1.0 (in float32 the rounding of
    the dot product and the norms leaves ~1e-7), so "identical" is distinguishable from "very close".
    A zero vector on either side gives 0."""
    a64, b64 = a.double(), b.double()
    dot = (a64 * b64).sum(-1)
    # sqrt(|a|^2 |b|^2) rather than |a| |b|: for a == b it returns the dot product itself, bit for bit
    norm = torch.sqrt(a64.square().sum(-1) * b64.square().sum(-1))
    return dot / norm.clamp_min(eps)


def fidelity(candidate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-puzzle fidelity: mean over token positions of the token cosine. (B, T, D) -> (B,)."""
    return token_cosine(candidate, reference).mean(-1)


def logit_kl(reference_logits: torch.Tensor, candidate_logits: torch.Tensor) -> torch.Tensor:
    """Per-puzzle mean over cells of KL(softmax(reference) || softmax(candidate)), in float64, as
    llama.cpp's perplexity tool reports it for LMs. (B, S, V) x (B, S, V) -> (B,)."""
    ref = torch.log_softmax(reference_logits.double(), dim=-1)
    cand = torch.log_softmax(candidate_logits.double(), dim=-1)
    return (ref.exp() * (ref - cand)).sum(-1).clamp_min(0.0).mean(-1)
