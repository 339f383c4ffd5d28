"""A small CPU training loop for the zoo models, with the official ACT deep-supervision scheme.

It keeps the official training semantics that shape the weights (TRM_FACTS §3.2, §3.5, §7):
- each iteration runs ONE ACT step for every slot of the batch; a slot's carry persists across
  iterations until it halts, and only then is the slot refilled with a new example — deep
  supervision amortised over iterations. TRM halts on q_halt > 0, HRM on q_halt > q_continue; both
  at `halt_max_steps`, with the official exploration (a random minimum step count);
- loss = stablemax cross-entropy (float64, mean over each sequence's scored tokens, summed over the
  batch) + 0.5 * BCE(q_halt, sequence exactly right) [+ 0.5 * BCE(q_continue, bootstrapped target)
  for HRM, the target from one extra no-grad ACT step on the new carry], divided by the batch size;
- EMA of the trainable parameters (rate 0.999 as in the official `ema=True` runs); the EMA copy is
  what gets shipped, buffers (H_init, L_init, the puzzle table) are the live values (TRM_FACTS §4).

It is simpler than the official pretrain.py: one process, AdamW instead of AdamATan2, the puzzle
table trained densely by the same optimizer. Additions for CPU budgets: an fp32 attention core in
training only, optional `torch.compile` of the reasoning modules, fresh augmentations of every
example drawn (the data grows with the run), a learning curve on held-out data, and periodic
training checkpoints that `resume` continues bit for bit.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from carrygate.models.layers import Attention
from carrygate.models.metrics import cells_correct, task_accuracy
from carrygate.models.reasoner import Carry, RecursiveReasoner
from carrygate.models.tasks.dataset import IGNORE_LABEL_ID, PuzzleSplit
from carrygate.models.training_state import load_training_state, numpy_rng_record, numpy_rng_state

# (inputs, labels, rng) -> a fresh random symmetry of one example, same shapes.
Augment = Callable[[np.ndarray, np.ndarray, np.random.RandomState], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    lr_warmup: int = 100
    lr_min_ratio: float = 0.1  # cosine decay ends at lr * lr_min_ratio (the official `lr_min_ratio`)
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    seed: int = 0
    ema_rate: float = 0.999  # 0 disables EMA
    fp32_attention: bool = False  # RoPE + SDPA in fp32 during training (projections stay in train dtype)
    compile: bool = False
    augment: str = "none"  # "sudoku" | "maze" | "none": a fresh symmetry of every example drawn
    eval_every: int = 0  # learning-curve point every N iterations (0 = none)
    eval_limit: int = 500
    checkpoint_every: int = 0  # training checkpoint every N iterations (0 = only at the end)


@dataclass
class TrainResult:
    stats: dict[str, float]
    curve: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0  # wall time over every run of this training, resumes included
    iteration: int = 0


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


def q_continue_target(next_q_halt: torch.Tensor, next_q_continue: torch.Tensor, is_last_step: torch.Tensor) -> torch.Tensor:
    """HRM's bootstrapped Q target (HRM hrm_act_v1.py, TRM_FACTS §3.2 item 7): the sigmoid of the next
    step's q_halt at the last step, else of max(next q_halt, next q_continue)."""
    return torch.sigmoid(torch.where(is_last_step, next_q_halt, torch.maximum(next_q_halt, next_q_continue)))


def q_continue_loss(q_continue: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed BCE, weighted 0.5 like q_halt's in the official total loss."""
    return 0.5 * F.binary_cross_entropy_with_logits(q_continue, target, reduction="sum")


def uses_q_continue(model: RecursiveReasoner) -> bool:
    """HRM halts on q_halt > q_continue and trains q_continue; TRM (no_ACT_continue) does neither."""
    return not getattr(model.config, "no_ACT_continue", False)


class EMA:
    """Shadow copy of the parameters that require grad (the official `models/ema.py` scope)."""

    def __init__(self, model: torch.nn.Module, rate: float) -> None:
        self.rate = rate
        self.shadow = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, p in model.named_parameters():
            if k in self.shadow:
                self.shadow[k].lerp_(p.detach(), 1 - self.rate)

    def state_dict_of(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with the shadow in place of its parameters (buffers live)."""
        return {k: self.shadow.get(k, v).detach().clone() for k, v in model.state_dict().items()}


def set_fp32_attention(model: torch.nn.Module, enabled: bool) -> None:
    for module in model.modules():
        if isinstance(module, Attention):
            module.fp32_core_in_training = enabled


def compile_levels(model: RecursiveReasoner) -> None:
    """Compile the reasoning modules in place (nn.Module.compile keeps the state-dict keys)."""
    # Every model shares ReasoningModule.forward's code object, and each one needs several graphs
    # (no-grad and grad cycles, inputs with and without requires_grad); dynamo's default limit of 8
    # per code object would silently fall back to eager for the second model in a process.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    for name in ("L_level", "H_level"):
        module = getattr(model, name, None)
        if module is not None:
            module.compile(dynamic=False)


def make_augment(name: str, seq_len: int) -> Augment | None:
    if name == "none":
        return None
    if name == "sudoku":
        from carrygate.models.tasks.sudoku import augment_example

        return augment_example
    if name == "maze":
        from carrygate.models.tasks.maze import augment_example as maze_augment

        return maze_augment
    raise ValueError(f"augment must be none, sudoku or maze, got {name!r}")


def cosine_lr(it: int, total: int, base: float, warmup: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up, then cosine decay from `base` to `base * min_ratio` (the official schedule)."""
    if it < warmup:
        return base * (it + 1) / warmup
    progress = (it - warmup) / max(1, total - warmup)
    return base * (min_ratio + max(0.0, (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))))


def train(
    model: RecursiveReasoner,
    data: PuzzleSplit,
    config: TrainConfig,
    on_progress: Callable[[int, dict[str, float]], None] | None = None,
    *,
    eval_data: PuzzleSplit | None = None,
    eval_model: RecursiveReasoner | None = None,
    checkpoint_path: str | Path | None = None,
    resume: str | Path | None = None,
    stop_after: int | None = None,
    extra_state: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `model` in place on `data`; on return the model holds the EMA weights (if EMA is on).

    `eval_data` + `eval_model` (a model of the shipped config, e.g. fp32) give the learning curve:
    every `eval_every` iterations the EMA weights are loaded into `eval_model` and scored on the first
    `eval_limit` held-out examples. `checkpoint_path` gets the whole training state every
    `checkpoint_every` iterations and at the end; `resume` continues from such a file exactly.
    `stop_after` ends this run after that many iterations in all (the schedule still spans
    `config.iterations`), as an interruption would. `extra_state` is stored in the checkpoint as is.
    """
    torch.manual_seed(config.seed)
    rng = np.random.RandomState(config.seed)
    set_fp32_attention(model, config.fp32_attention)
    model.train()
    params = list(model.parameters())
    if model.puzzle_emb is not None:
        model.puzzle_emb.weights.requires_grad_(True)
        params.append(model.puzzle_emb.weights)
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    ema = EMA(model, config.ema_rate) if config.ema_rate > 0 else None
    augment = make_augment(config.augment, data.metadata.seq_len)
    hrm_q = uses_q_continue(model)

    B, n = config.batch_size, len(data)
    order, cursor = rng.permutation(n), 0
    inputs = torch.zeros(B, data.metadata.seq_len, dtype=torch.int32)
    labels = torch.full_like(inputs, IGNORE_LABEL_ID)
    pids = torch.zeros(B, dtype=torch.int32)
    carry = model.initial_carry(B)
    steps = torch.zeros(B, dtype=torch.int32)
    halted = torch.ones(B, dtype=torch.bool)
    max_steps = model.config.halt_max_steps
    # Halted-sequence statistics over the last 1000 halts: slots halt in bursts (all together at
    # first), so a per-iteration running mean would only move on the iterations where some halt.
    recent_steps: deque[int] = deque(maxlen=1000)
    recent_exact: deque[bool] = deque(maxlen=1000)
    stats = {"loss": 0.0, "exact_at_halt": 0.0, "mean_steps": 0.0, "examples": 0.0}
    curve: list[dict[str, float]] = []
    start_it, elapsed_before = 0, 0.0

    if resume is not None:
        state = load_training_state(resume)
        saved = TrainConfig(**{**state["config"], "betas": tuple(state["config"]["betas"])})
        if _schedule_fields(saved) != _schedule_fields(config):
            raise ValueError(f"{resume}: saved with a different training config {saved}, asked {config}")
        model.load_state_dict(state["model"])
        if model.puzzle_emb is not None:
            model.puzzle_emb.weights.requires_grad_(True)
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.shadow = state["ema"]
        loop = state["loop"]
        inputs, labels, pids, steps, halted = loop["inputs"], loop["labels"], loop["pids"], loop["steps"], loop["halted"]
        carry = Carry(loop["z_H"], loop["z_L"])
        order, cursor = loop["order"].numpy(), loop["cursor"]
        recent_steps.extend(loop["recent_steps"])
        recent_exact.extend(loop["recent_exact"])
        torch.set_rng_state(state["torch_rng"])
        rng.set_state(numpy_rng_state(state["numpy_rng"]))
        stats, curve = state["stats"], state["curve"]
        start_it, elapsed_before = state["iteration"], state["seconds"]

    if config.compile:
        compile_levels(model)
    start = time.perf_counter()

    def save(iteration: int) -> None:
        if checkpoint_path is None:
            return
        state = {
            "config": asdict(config) | {"betas": list(config.betas)},
            "iteration": iteration,
            "seconds": elapsed_before + time.perf_counter() - start,
            "model": _plain_state(model),
            "optimizer": optimizer.state_dict(),
            "ema": ema.shadow if ema is not None else None,
            "loop": {"inputs": inputs, "labels": labels, "pids": pids, "steps": steps, "halted": halted,
                     "z_H": carry.z_H, "z_L": carry.z_L, "order": torch.from_numpy(order), "cursor": cursor,
                     "recent_steps": list(recent_steps), "recent_exact": list(recent_exact)},
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": numpy_rng_record(rng.get_state()),
            "stats": stats,
            "curve": curve,
            "extra": extra_state or {},
        }
        path = Path(checkpoint_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)  # a kill mid-save leaves the previous checkpoint intact

    last = config.iterations if stop_after is None else min(stop_after, config.iterations)
    for it in range(start_it, last):
        # Refill halted slots with fresh examples; their carry restarts from H_init / L_init.
        refill = halted.nonzero().flatten().tolist()
        for slot in refill:
            if cursor == n:
                order, cursor = rng.permutation(n), 0
            idx = int(order[cursor])
            cursor += 1
            x_np, y_np = np.asarray(data.inputs[idx], dtype=np.int32), data.labels[idx]
            if augment is not None:
                x_np, y_np = augment(x_np, y_np, rng)
            inputs[slot] = torch.from_numpy(np.asarray(x_np, dtype=np.int32))
            labels[slot] = torch.from_numpy(np.asarray(y_np, dtype=np.int32))
            pids[slot] = int(data.puzzle_identifiers[idx])
        stats["examples"] += len(refill)
        init = model.initial_carry(B)
        reset = halted.view(-1, 1, 1)
        carry = Carry(torch.where(reset, init.z_H, carry.z_H), torch.where(reset, init.z_L, carry.z_L))
        steps = torch.where(halted, 0, steps)

        lr = cosine_lr(it, config.iterations, config.lr, config.lr_warmup, config.lr_min_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = model.input_embeddings(inputs, pids)
        out = model.step(carry, x)
        loss, seq_correct = act_loss(out.logits, out.q_halt_logits, labels)
        new_steps = steps + 1
        if hrm_q:
            # The official target comes from one more inner forward on the new carry, no grad.
            with torch.no_grad():
                nxt = model.step(out.carry, x.detach())
                target = q_continue_target(nxt.q_halt_logits, nxt.q_continue_logits, new_steps >= max_steps)
            loss = loss + q_continue_loss(out.q_continue_logits, target)
        optimizer.zero_grad(set_to_none=True)
        (loss / B).backward()
        optimizer.step()
        if ema is not None:
            ema.update(model)
        carry = out.carry

        with torch.no_grad():
            steps = new_steps
            halt_signal = out.q_halt_logits > out.q_continue_logits if hrm_q else out.q_halt_logits > 0
            halted = (steps >= max_steps) | halt_signal
            explore = torch.rand(B) < model.config.halt_exploration_prob
            min_steps = explore * torch.randint(2, max_steps + 1, (B,))
            halted = halted & (steps >= min_steps)
        done = halted.nonzero().flatten()
        recent_steps.extend(steps[done].tolist())
        recent_exact.extend(seq_correct[done].tolist())
        if recent_steps:
            stats["mean_steps"] = float(np.mean(recent_steps))
            stats["exact_at_halt"] = float(np.mean(recent_exact))
        batch_loss = float(loss.detach()) / B
        stats["loss"] = 0.98 * stats["loss"] + 0.02 * batch_loss if it else batch_loss

        if config.eval_every and eval_data is not None and ((it + 1) % config.eval_every == 0 or it + 1 == config.iterations):
            target_model = eval_model if eval_model is not None else copy.deepcopy(model)
            weights = ema.state_dict_of(model) if ema is not None else _plain_state(model)
            target_model.load_state_dict(weights)
            scores = evaluate(target_model, eval_data, limit=config.eval_limit)
            seconds = round(elapsed_before + time.perf_counter() - start, 1)
            curve.append({"iteration": it + 1, "examples": stats["examples"], "seconds": seconds,
                          "cell_accuracy": scores["cell_accuracy"], "puzzle_exact": scores["puzzle_exact"]})
            model.train()
        if on_progress is not None:
            on_progress(it + 1, {**stats, "lr": lr, "seconds": elapsed_before + time.perf_counter() - start})
        if config.checkpoint_every and (it + 1) % config.checkpoint_every == 0:
            save(it + 1)
    save(last)
    seconds = elapsed_before + time.perf_counter() - start
    if model.puzzle_emb is not None:
        model.puzzle_emb.weights.requires_grad_(False)
    if ema is not None:
        model.load_state_dict(ema.state_dict_of(model))
    set_fp32_attention(model, False)
    model.eval()
    return TrainResult(stats=stats, curve=curve, seconds=seconds, iteration=last)


def _schedule_fields(config: TrainConfig) -> dict[str, Any]:
    """What a resumed run must share with the saved one (speed options may change)."""
    d = asdict(config)
    for speed_only in ("compile", "eval_every", "eval_limit", "checkpoint_every"):
        d.pop(speed_only)
    return d


def _plain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.inference_mode()
def evaluate(model: RecursiveReasoner, data: PuzzleSplit, batch_size: int = 256, limit: int | None = None,
             record: bool = False) -> dict[str, Any]:
    """Official evaluation: halt_max_steps steps, predictions from the last; task metrics. With `record`
    also `cells_correct`, the right cells of every puzzle, which a card keeps so that a prefix of the
    split can be checked against it puzzle by puzzle (tests/unit/test_cli.py)."""
    model.eval()
    preds, labels = [], []
    for inputs, lab, pids in data.batches(batch_size, limit):
        out = model(torch.from_numpy(inputs), torch.from_numpy(pids))
        preds.append(out.logits.argmax(-1))
        labels.append(torch.from_numpy(lab))
    all_preds, all_labels = torch.cat(preds), torch.cat(labels)
    scores: dict[str, Any] = dict(task_accuracy(all_preds, all_labels))
    if record:
        scores["cells_correct"] = cells_correct(all_preds, all_labels)[0].tolist()
    return scores
