"""Engine speed: achieved FLOP/s of one full-size TRM-MLP Sudoku ACT step vs a plain matmul.

Model: hidden 512, T = 97 (81 + 16 prefix), H_cycles 3, L_cycles 6, 2 layers, batch 64 — the
paper's Sudoku MLP-mixing model at full size (random weights; speed does not depend on values).
Peak: a plain [B*T, 512] x [512, 3072] matmul (the dominant shape of a step) of the same dtype,
measured in the same run, interleaved with the model timings so machine noise hits both alike.

    python bench/engine_step.py [--batch 64] [--repeats 3] [--no-compile]

Prints, per dtype and mode (eager, torch.compile), the step time, GFLOP/s and the ratio to the peak.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch

from carrygate.models import TRMConfig, build_model
from carrygate.models.footprint import flops_per_step


def best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()

    rows = []
    for dtype in ("bfloat16", "float32"):
        config = TRMConfig(seq_len=81, vocab_size=11, num_puzzle_identifiers=1, puzzle_emb_ndim=512, H_cycles=3, L_cycles=6, L_layers=2,
                           hidden_size=512, expansion=4, num_heads=8, pos_encodings="none", mlp_t=True, halt_max_steps=16,
                           forward_dtype=dtype)
        model = build_model(config)
        B, T, D = args.batch, config.total_len, config.hidden_size
        inputs = torch.randint(0, 11, (B, 81))
        ids = torch.zeros(B, dtype=torch.long)
        flops = flops_per_step(config) * B
        a = torch.randn(B * T, D, dtype=config.torch_dtype)
        w = torch.randn(D, 6 * D, dtype=config.torch_dtype)
        matmul_flops = 2 * a.shape[0] * a.shape[1] * w.shape[1]

        modes: dict[str, Callable[..., object]] = {"eager": model.step}
        if not args.no_compile:
            modes["compile"] = torch.compile(model.step, dynamic=False)
        with torch.inference_mode():
            x = model.input_embeddings(inputs, ids)
            carry = model.initial_carry(B)
            for mode, step in modes.items():
                step_s = best_time(partial(step, carry, x), args.repeats)
                peak_s = best_time(partial(torch.mm, a, w), max(5, args.repeats * 3))
                achieved, peak = flops / step_s / 1e9, matmul_flops / peak_s / 1e9
                rows.append((dtype, mode, step_s, achieved, peak, achieved / peak))

    print(f"TRM-MLP Sudoku step, hidden 512, T 97, H3 L6, batch {args.batch}, {torch.get_num_threads()} threads")
    print(f"{'dtype':10} {'mode':8} {'step s':>8} {'GFLOP/s':>9} {'matmul GFLOP/s':>15} {'ratio':>6}")
    for dtype, mode, step_s, achieved, peak, ratio in rows:
        print(f"{dtype:10} {mode:8} {step_s:8.3f} {achieved:9.1f} {peak:15.1f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
