"""Metrics as pure tensor functions.

Task metrics follow the official `losses.py` (TRM_FACTS §3.5):
- cell accuracy = mean over puzzles of (correct tokens / scored tokens) — a *per-sequence* mean,
  not pooled over tokens; positions labelled -100 are not scored; puzzles with no scored token
  (padding rows) are not counted;
- puzzle-exact = share of those puzzles whose every scored token is right.

Label-free trajectory metrics (DESIGN.md "Definitions") compare a candidate's carry with the
reference's, token by token, in float32.
"""

from __future__ import annotations

import torch

from models.tasks.dataset import IGNORE_LABEL_ID


def per_puzzle_accuracy(preds: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, S) predictions and labels -> (cell accuracy per puzzle, exact per puzzle, valid mask)."""
    mask = labels != IGNORE_LABEL_ID
    counts = mask.sum(-1)
    correct = (mask & (preds == labels)).sum(-1)
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
    """(B, T, D) x (B, T, D) -> (B, T) cosine per token position, computed in float32.

    A zero vector on either side gives 0 (F.cosine_similarity would clamp the norm instead and
    call two zero vectors dissimilar for a different reason)."""
    a32, b32 = a.float(), b.float()
    dot = (a32 * b32).sum(-1)
    norm = a32.norm(dim=-1) * b32.norm(dim=-1)
    return dot / norm.clamp_min(eps)


def fidelity(candidate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-puzzle fidelity: mean over token positions of the token cosine. (B, T, D) -> (B,)."""
    return token_cosine(candidate, reference).mean(-1)
