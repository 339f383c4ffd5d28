"""Batch inference over arrays: what `carrygate predict` runs.

Outputs follow the official evaluation: `halt_max_steps` ACT steps (or an override), predictions
are the argmax of the last step's logits, taken in the forward dtype (the official argmax is over
bf16 logits for bf16 models; an all-fp32 argmax can differ on rare ties).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from carrygate.models.reasoner import RecursiveReasoner


@torch.inference_mode()
def predict_arrays(
    model: RecursiveReasoner,
    inputs: np.ndarray,
    puzzle_identifiers: np.ndarray,
    *,
    steps: int | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    save_carry: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """-> {"preds" [N, S] int64, "logits" [N, S, V] float32 (last step), "q_halt_logits" [steps, N],
    and with save_carry "z_H", "z_L" [steps, N, T, D] float32}."""
    n_steps = steps or model.config.halt_max_steps
    n, seq_len = inputs.shape
    if seq_len != model.config.seq_len:
        raise ValueError(f"inputs have {seq_len} tokens per example but the model's seq_len is {model.config.seq_len}")
    if puzzle_identifiers.shape != (n,):
        raise ValueError(f"puzzle ids must have shape ({n},), got {puzzle_identifiers.shape}")
    if inputs.min(initial=0) < 0 or inputs.max(initial=0) >= model.config.vocab_size:
        raise ValueError(f"input token ids must lie in 0..{model.config.vocab_size - 1}")
    if puzzle_identifiers.min(initial=0) < 0 or puzzle_identifiers.max(initial=0) >= model.config.num_puzzle_identifiers:
        raise ValueError(f"puzzle ids must lie in 0..{model.config.num_puzzle_identifiers - 1}")
    model = model.to(device)
    T, D, V = model.config.total_len, model.config.hidden_size, model.config.vocab_size
    out: dict[str, np.ndarray] = {
        "preds": np.zeros((n, seq_len), np.int64),
        "logits": np.zeros((n, seq_len, V), np.float32),
        "q_halt_logits": np.zeros((n_steps, n), np.float32),
    }
    if save_carry:
        out["z_H"] = np.zeros((n_steps, n, T, D), np.float32)
        out["z_L"] = np.zeros((n_steps, n, T, D), np.float32)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x = torch.from_numpy(np.asarray(inputs[start:stop], dtype=np.int32)).to(device)
        ids = torch.from_numpy(np.asarray(puzzle_identifiers[start:stop], dtype=np.int32)).to(device)
        last = None
        for t, last in enumerate(model.steps(x, ids, n_steps)):
            out["q_halt_logits"][t, start:stop] = last.q_halt_logits.float().cpu().numpy()
            if save_carry:
                out["z_H"][t, start:stop] = last.carry.z_H.float().cpu().numpy()
                out["z_L"][t, start:stop] = last.carry.z_L.float().cpu().numpy()
        assert last is not None
        out["preds"][start:stop] = last.logits.argmax(-1).cpu().numpy()
        out["logits"][start:stop] = last.logits.float().cpu().numpy()
        if on_batch is not None:
            on_batch(stop - start)
    return out
