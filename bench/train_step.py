"""Seconds per training iteration, old path vs new path, side by side, on the zoo configs.

    python bench/train_step.py [--iterations 10] [--batch-size 96] [--threads 1] [--configs sudoku-att,...]

old: the previous default, everything in bf16 (attention's bf16 backward included), eager.
new: RoPE + attention in fp32 during training (projections stay bf16), the reasoning modules
     compiled with torch.compile. MLP-mixer configs have no attention, so only compile differs.

Each iteration is one ACT step of the whole batch with loss, backward and an AdamW step, on random
tokens of the task's shape (the cost does not depend on the tokens). The first `--warmup`
iterations (compilation included) are not timed; the median of the rest is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from carrygate.models import HRMConfig, TRMConfig, build_model
from carrygate.models.reasoner import RecursiveReasoner
from carrygate.models.train import act_loss, compile_levels, set_fp32_attention

CONFIGS: dict[str, dict[str, Any]] = {
    # The zoo cards' model configs (hidden 128, expansion 2, 8 ACT steps).
    "sudoku-mlp": {"arch": "trm", "seq_len": 81, "vocab_size": 11, "mlp_t": True, "pos_encodings": "none", "H_cycles": 2, "L_cycles": 3},
    "sudoku-att": {"arch": "trm", "seq_len": 81, "vocab_size": 11, "pos_encodings": "rope", "H_cycles": 2, "L_cycles": 3},
    "hrm-sudoku": {"arch": "hrm", "seq_len": 81, "vocab_size": 11, "pos_encodings": "rope", "H_cycles": 2, "L_cycles": 2, "H_layers": 2},
    "maze-att": {"arch": "trm", "seq_len": 121, "vocab_size": 6, "pos_encodings": "rope", "H_cycles": 2, "L_cycles": 2},
    "sudoku6-att": {"arch": "trm", "seq_len": 36, "vocab_size": 8, "pos_encodings": "rope", "H_cycles": 2, "L_cycles": 2},
    "sudoku6-mlp": {"arch": "trm", "seq_len": 36, "vocab_size": 8, "mlp_t": True, "pos_encodings": "none", "H_cycles": 2, "L_cycles": 2},
}


def build(name: str) -> RecursiveReasoner:
    spec = dict(CONFIGS[name])
    arch = spec.pop("arch")
    common = {"num_puzzle_identifiers": 1, "puzzle_emb_ndim": 128, "L_layers": 2, "hidden_size": 128, "expansion": 2.0,
              "num_heads": 4, "halt_max_steps": 8, "forward_dtype": "bfloat16"}
    if arch == "hrm":
        return build_model(HRMConfig(**common, **spec))
    return build_model(TRMConfig(**common, puzzle_emb_len=1, **spec))


def seconds_per_iteration(name: str, new: bool, batch_size: int, iterations: int, warmup: int) -> float:
    torch.manual_seed(0)
    model = build(name)
    model.train()
    if new:
        set_fp32_attention(model, True)
        compile_levels(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    T = model.config.seq_len
    inputs = torch.randint(1, model.config.vocab_size, (batch_size, T), dtype=torch.int32)
    labels = torch.randint(2, model.config.vocab_size, (batch_size, T), dtype=torch.int32)
    pids = torch.zeros(batch_size, dtype=torch.int32)
    carry = model.initial_carry(batch_size)
    times = []
    for i in range(warmup + iterations):
        start = time.perf_counter()
        x = model.input_embeddings(inputs, pids)
        out = model.step(carry, x)
        loss, _ = act_loss(out.logits, out.q_halt_logits, labels)
        optimizer.zero_grad(set_to_none=True)
        (loss / batch_size).backward()
        optimizer.step()
        carry = out.carry
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first (compilation happens here)")
    parser.add_argument("--batch-size", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--configs", default="sudoku-mlp,sudoku-att,hrm-sudoku,maze-att")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch_size}, {args.threads} thread(s), median of {args.iterations} iterations after {args.warmup} warm-up")
    print(f"{'config':<12} {'old s/it':>9} {'new s/it':>9} {'speed-up':>9}")
    for name in args.configs.split(","):
        old = seconds_per_iteration(name, False, args.batch_size, args.iterations, args.warmup)
        new = seconds_per_iteration(name, True, args.batch_size, args.iterations, args.warmup)
        print(f"{name:<12} {old:>9.3f} {new:>9.3f} {old / new:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
