"""Is bf16 / fp16 fast on this CPU? fp32, bf16 and fp16 matmuls side by side, one run, one thread.

    python bench/half_matmul.py [--size 1024] [--repeats 5] [--threads 1]

It prints GFLOP/s per dtype and the ratio to fp32, and what `models/compress/half.py` decides here
(native bf16, or bf16 emulated in fp32 as fp16 always is). The dtypes are interleaved per repeat so a
noisy neighbour slows all of them alike.
"""

from __future__ import annotations

import argparse
import time

import torch

from carrygate.models.compress.half import native_bf16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.size
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    mats = {dt: (torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)) for dt in dtypes}
    best = {dt: float("inf") for dt in dtypes}
    for dt in dtypes:  # warm-up
        a, b = mats[dt]
        a @ b
    for _ in range(args.repeats):
        for dt in dtypes:
            a, b = mats[dt]
            start = time.perf_counter()
            a @ b
            best[dt] = min(best[dt], time.perf_counter() - start)
    flop = 2 * n**3
    print(f"{n}x{n} matmul, {args.threads} thread(s), best of {args.repeats}")
    for dt in dtypes:
        print(f"{str(dt):16s} {flop / best[dt] / 1e9:9.2f} GFLOP/s  {best[torch.float32] / best[dt]:6.3f}x fp32")
    print(f"native bf16 on this CPU: {native_bf16()} -> bf16 candidates run {'natively' if native_bf16() else 'emulated in fp32'}")


if __name__ == "__main__":
    main()
