"""A small CPU training loop for the zoo models, with the official ACT deep-supervision scheme.

It keeps the official training semantics that shape the weights (TRM_FACTS §3.2, §3.5):
- each iteration runs ONE ACT step for every slot of the batch; a slot's carry persists across
  iterations until it halts (q_halt > 0, or `halt_max_steps`, with exploration), and only then is
  the slot refilled with a new example — deep supervision amortised over iterations;
- loss = stablemax cross-entropy (float64, mean over each sequence's scored tokens, summed over the
  batch) + 0.5 * BCE(q_halt, sequence exactly right), divided by the batch size.
It is simpler than the official pretrain.py: one process, AdamW instead of AdamATan2, the puzzle
table trained densely by the same optimizer, no EMA. The checkpoint it writes has the official layout.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.metrics import task_accuracy
from models.reasoner import Carry, RecursiveReasoner
from models.tasks.dataset import IGNORE_LABEL_ID, PuzzleSplit


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    lr_warmup: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    seed: int = 0


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token loss with the official stablemax (s(x) = x+1 for x >= 0, 1/(1-x) below), float64."""
    x = logits.to(torch.float64)
    s = torch.where(x < 0, 1 / (1 - x + 1e-30), x + 1)
    logprobs = torch.log(s / s.sum(-1, keepdim=True))
    mask = labels != IGNORE_LABEL_ID
    picked = logprobs.gather(-1, torch.where(mask, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return -torch.where(mask, picked, 0)


def act_loss(logits: torch.Tensor, q_halt: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (summed loss over the batch, per-row sequence exactness)."""
    mask = labels != IGNORE_LABEL_ID
    counts = mask.sum(-1).clamp_min(1)
    with torch.no_grad():
        seq_correct = ((logits.argmax(-1) == labels) | ~mask).all(-1)
    lm = (stablemax_cross_entropy(logits, labels).sum(-1) / counts).sum()
    q = F.binary_cross_entropy_with_logits(q_halt, seq_correct.to(q_halt.dtype), reduction="sum")
    return lm + 0.5 * q, seq_correct


def train(
    model: RecursiveReasoner,
    data: PuzzleSplit,
    config: TrainConfig,
    on_progress: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Train `model` in place on `data`. Returns the final running statistics."""
    torch.manual_seed(config.seed)
    rng = np.random.RandomState(config.seed)
    model.train()
    params = list(model.parameters())
    if model.puzzle_emb is not None:
        model.puzzle_emb.weights.requires_grad_(True)
        params.append(model.puzzle_emb.weights)
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)

    B, n = config.batch_size, len(data)
    order, cursor = rng.permutation(n), 0
    inputs = torch.zeros(B, data.metadata.seq_len, dtype=torch.int32)
    labels = torch.full_like(inputs, IGNORE_LABEL_ID)
    pids = torch.zeros(B, dtype=torch.int32)
    carry = model.initial_carry(B)
    steps = torch.zeros(B, dtype=torch.int32)
    halted = torch.ones(B, dtype=torch.bool)
    max_steps = model.config.halt_max_steps
    stats = {"loss": 0.0, "exact_at_halt": 0.0, "mean_steps": 0.0}
    start = time.perf_counter()

    for it in range(config.iterations):
        # Refill halted slots with fresh examples; their carry restarts from H_init / L_init.
        refill = halted.nonzero().flatten().tolist()
        for slot in refill:
            if cursor == n:
                order, cursor = rng.permutation(n), 0
            idx = int(order[cursor])
            cursor += 1
            inputs[slot] = torch.from_numpy(np.asarray(data.inputs[idx], dtype=np.int32))
            labels[slot] = torch.from_numpy(data.labels[idx])
            pids[slot] = int(data.puzzle_identifiers[idx])
        init = model.initial_carry(B)
        reset = halted.view(-1, 1, 1)
        carry = Carry(torch.where(reset, init.z_H, carry.z_H), torch.where(reset, init.z_L, carry.z_L))
        steps = torch.where(halted, 0, steps)

        lr = cosine_lr(it, config.iterations, config.lr, config.lr_warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = model.input_embeddings(inputs, pids)
        out = model.step(carry, x)
        loss, seq_correct = act_loss(out.logits, out.q_halt_logits, labels)
        optimizer.zero_grad(set_to_none=True)
        (loss / B).backward()
        optimizer.step()
        carry = out.carry

        with torch.no_grad():
            steps = steps + 1
            halted = (steps >= max_steps) | (out.q_halt_logits > 0)
            explore = torch.rand(B) < model.config.halt_exploration_prob
            min_steps = explore * torch.randint(2, max_steps + 1, (B,))
            halted = halted & (steps >= min_steps)
        if halted.any():
            stats["exact_at_halt"] = 0.98 * stats["exact_at_halt"] + 0.02 * float(seq_correct[halted].float().mean())
            stats["mean_steps"] = 0.98 * stats["mean_steps"] + 0.02 * float(steps[halted].float().mean())
        batch_loss = float(loss.detach()) / B
        stats["loss"] = 0.98 * stats["loss"] + 0.02 * batch_loss if it else batch_loss
        if on_progress is not None:
            on_progress(it + 1, {**stats, "lr": lr, "seconds": time.perf_counter() - start})
    if model.puzzle_emb is not None:
        model.puzzle_emb.weights.requires_grad_(False)
    model.eval()
    return stats


@torch.inference_mode()
def evaluate(model: RecursiveReasoner, data: PuzzleSplit, batch_size: int = 256, limit: int | None = None) -> dict[str, float]:
    """Official evaluation: halt_max_steps steps, predictions from the last; task metrics."""
    model.eval()
    preds, labels = [], []
    for inputs, lab, pids in data.batches(batch_size, limit):
        out = model(torch.from_numpy(inputs), torch.from_numpy(pids))
        preds.append(out.logits.argmax(-1))
        labels.append(torch.from_numpy(lab))
    return task_accuracy(torch.cat(preds), torch.cat(labels))


def cosine_lr(it: int, total: int, base: float, warmup: int) -> float:
    if it < warmup:
        return base * (it + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (it - warmup) / max(1, total - warmup)))
