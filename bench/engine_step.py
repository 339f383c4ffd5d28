"""Engine speed: the fast step vs the exact (official eager) step, and the fast step vs the matmul peak.

Model: hidden 512, T = 97 (81 + 16 prefix), H_cycles 3, L_cycles 6, 2 layers — the paper's Sudoku
MLP-mixing model at full size (random weights; speed does not depend on values). Per dtype, side by
side in one run, interleaved so machine noise hits every mode alike (best of `--repeats`):

- exact:         the official eager step (`numerics="exact"`, the tests' oracle; what the official
                 evaluation loop runs per ACT step);
- fast:          `models.fast` eager (no-transpose token mixer);
- fast+compile:  `models.fast` through the shared `torch.compile`d step;
- peak:          a plain [B*T, 512] x [512, 3072] matmul of the same dtype (the dominant shape).

Prints seconds per model-step, GFLOP/s, the ratio to exact (target >= 2x in bf16 at batch >= 32) and
to the peak (target >= 0.6), and the rounding difference of the fast step against the exact one.

    python bench/engine_step.py [--batch 32] [--repeats 3] [--dtypes bfloat16,float32]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch

from carrygate.models import TRMConfig, build_model
from carrygate.models.fast import fast_step
from carrygate.models.footprint import flops_per_step
from carrygate.models.metrics import token_cosine
from carrygate.models.reasoner import Carry, StepOutput


def best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", default="bfloat16,float32")
    args = parser.parse_args()

    print(f"TRM-MLP Sudoku step, hidden 512, T 97, H3 L6, batch {args.batch}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'dtype':9} {'mode':13} {'step s':>8} {'GFLOP/s':>8} {'peak GFLOP/s':>13} {'of peak':>8} {'vs exact':>9}")
    for dtype in args.dtypes.split(","):
        config = TRMConfig(seq_len=81, vocab_size=11, num_puzzle_identifiers=1, puzzle_emb_ndim=512, H_cycles=3, L_cycles=6, L_layers=2,
                           hidden_size=512, expansion=4, num_heads=8, pos_encodings="none", mlp_t=True, halt_max_steps=16,
                           forward_dtype=dtype)
        torch.manual_seed(0)
        model = build_model(config).eval()
        B, T, D = args.batch, config.total_len, config.hidden_size
        flops = flops_per_step(config) * B
        a, w = torch.randn(B * T, D, dtype=config.torch_dtype), torch.randn(D, 6 * D, dtype=config.torch_dtype)
        matmul_flops = 2 * a.shape[0] * a.shape[1] * w.shape[1]
        modes = {"exact": model.step, "fast": fast_step(model, False), "fast+compile": fast_step(model, True)}
        with torch.inference_mode():
            x = model.input_embeddings(torch.randint(1, 11, (B, 81)), torch.zeros(B, dtype=torch.long))
            carry = model.initial_carry(B)
            times = {mode: best_time(partial(step, carry, x, 0), args.repeats) for mode, step in modes.items()}
            peak_s = best_time(partial(torch.mm, a, w), max(5, 3 * args.repeats))
            exact_out = modes["exact"](carry, x, 0)
            rounding = {mode: modes[mode](carry, x, 0) for mode in ("fast", "fast+compile")}
        peak = matmul_flops / peak_s / 1e9
        for mode, seconds in times.items():
            achieved = flops / seconds / 1e9
            speedup = times["exact"] / seconds
            print(f"{dtype:9} {mode:13} {seconds:8.3f} {achieved:8.1f} {peak:13.1f} {achieved / peak:8.2f} {speedup:8.2f}x")
        twin = fp32_twin(model, config, carry, x) if dtype != "float32" else None
        for mode, out in rounding.items():
            delta = (out.carry.z_H.float() - exact_out.carry.z_H.float()).abs().max().item()
            cos = token_cosine(out.carry.z_H, exact_out.carry.z_H).min().item()
            same = (out.logits.argmax(-1) == exact_out.logits.argmax(-1)).float().mean().item()
            print(f"{dtype:9} {mode:13} vs exact after one step: max |dz_H| {delta:.3g}, min token cosine {cos:.6f}, "
                  f"same argmax {same:.4f}")
        if twin is not None:  # which of the two roundings is nearer the fp32 computation of the same weights and inputs?
            for mode, out in {"exact": exact_out, **rounding}.items():
                cos = token_cosine(out.carry.z_H.float(), twin.carry.z_H).mean().item()
                print(f"{dtype:9} {mode:13} vs the fp32 twin after one step: mean token cosine {cos:.6f}")


def fp32_twin(model: torch.nn.Module, config: TRMConfig, carry: Carry, x: torch.Tensor) -> StepOutput:
    """One exact step of the same weights in fp32, from the same (upcast) carry and input embedding."""
    twin = build_model(config.model_copy(update={"forward_dtype": "float32"})).eval()
    twin.load_state_dict(model.state_dict())
    with torch.inference_mode():
        return twin.step(Carry(carry.z_H.float(), carry.z_L.float()), x.float(), 0)

if __name__ == "__main__":
    main()
