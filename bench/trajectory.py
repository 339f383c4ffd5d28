"""Lockstep-engine benchmarks, each a ratio measured side by side in one run.

    python bench/trajectory.py [--part mfu|sharing|memory|naive|cache|all] [--puzzles N]

1. mfu      — achieved FLOP/s of the engine (reference + 1 candidate, metrics included) on the
              full-size TRM-MLP Sudoku model ÷ a plain matmul of the same dtype (fp32 and bf16). Target >= 0.6.
2. sharing  — one job with K = 4 candidates vs 4 separate reference+candidate jobs. Target <= 0.7x.
3. memory   — peak RSS of a job with 16 ACT steps vs 2 steps (fresh subprocesses). Target <= 1.1x.
4. naive    — the engine vs a naive harness (forward hooks store every carry of every step; the
              reference and candidate run in separate passes; metrics computed afterwards):
              time and peak-memory ratios.
5. cache    — a repeated job (K = 4 candidates + the noise floor, the real `evaluate` path) on the shipped
              sudoku-mlp and its held-out split: no cache, first run (miss, trace stored), second run
              (hit: reference and noise floor replayed). Target: hit / no cache <= 0.85 (ideal 4/6).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from functools import partial

import torch

from carrygate.models import TRMConfig, build_model
from carrygate.models.compress import CompressionSpec, apply
from carrygate.models.footprint import flops_per_step
from carrygate.models.metrics import token_cosine
from carrygate.models.trajectory import Candidate, run_lockstep

SPECS = [
    CompressionSpec(name="bf16", precision="bf16"),
    CompressionSpec.model_validate({"name": "int8", "weights": {"method": "int8-channel"}}),
    CompressionSpec.model_validate({"name": "int4", "weights": {"method": "int4", "granularity": "per_channel"}}),
    CompressionSpec(name="carry", carry={"bits": 8}),
]


def sudoku_mlp(hidden: int = 512, steps: int = 16, dtype: str = "float32", H: int = 3, L: int = 6) -> TRMConfig:
    return TRMConfig(seq_len=81, vocab_size=11, num_puzzle_identifiers=1, puzzle_emb_ndim=hidden, H_cycles=H, L_cycles=L, L_layers=2,
                     hidden_size=hidden, expansion=4, num_heads=8, pos_encodings="none", mlp_t=True, halt_max_steps=steps,
                     forward_dtype=dtype)


def batches(n: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor, None]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randint(1, 11, (min(batch, n - s), 81), generator=g), torch.zeros(min(batch, n - s), dtype=torch.long), None)
            for s in range(0, n, batch)]


def timed(fn: partial[object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def part_mfu(puzzles: int) -> None:
    for dtype in (torch.float32, torch.bfloat16):
        config = sudoku_mlp(dtype=str(dtype).removeprefix("torch."), steps=2)
        reference = build_model(config)
        candidate = Candidate("copy", apply(CompressionSpec(), reference))
        data = batches(puzzles, 64)
        a, w = torch.randn(64 * 97, 512, dtype=dtype), torch.randn(512, 3072, dtype=dtype)
        flops = 2 * puzzles * config.halt_max_steps * flops_per_step(config)
        for compiled in (False, True):
            run_lockstep(reference, [candidate], data[:1], compile_steps=compiled)  # warm-up (and compilation)
            engine_s = timed(partial(run_lockstep, reference, [candidate], data, compile_steps=compiled))
            peak_s = min(timed(partial(torch.mm, a, w)) for _ in range(10))
            achieved, peak = flops / engine_s / 1e9, 2 * a.shape[0] * 512 * 3072 / peak_s / 1e9
            mode = "torch.compile" if compiled else "eager"
            print(f"mfu {dtype} ({mode}): engine {achieved:.1f} GFLOP/s, matmul {peak:.1f} GFLOP/s, "
                  f"ratio {achieved / peak:.2f} (target >= 0.6)", flush=True)


def part_sharing(puzzles: int) -> None:
    reference = build_model(sudoku_mlp(hidden=128, steps=4, H=2, L=3))
    cands = [Candidate(s.display_name, apply(s, reference)) for s in SPECS]
    data = batches(puzzles, 64)
    run_lockstep(reference, cands[:1], data[:1])
    together = timed(partial(run_lockstep, reference, cands, data))
    separate = sum(timed(partial(run_lockstep, reference, [c], data)) for c in cands)
    print(f"sharing: K=4 in one job {together:.2f} s, 4 separate jobs {separate:.2f} s, ratio {together / separate:.2f} (target <= 0.7)")


def _rss_child(steps: int, puzzles: int, naive: bool) -> None:
    reference = build_model(sudoku_mlp(hidden=256, steps=steps, H=2, L=2))
    cand = apply(SPECS[1], reference)
    data = batches(puzzles, 64)
    start = time.perf_counter()
    if naive:
        naive_harness(reference, cand.model, data)  # weights only: the bare module is the whole candidate
    else:
        run_lockstep(reference, [Candidate("int8", cand)], data)
    print(json.dumps({"rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "seconds": time.perf_counter() - start}))


def child(steps: int, puzzles: int, naive: bool) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", str(steps), str(puzzles), str(int(naive))], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def naive_harness(reference: torch.nn.Module, candidate: torch.nn.Module, data: list[tuple[torch.Tensor, torch.Tensor, None]]) -> float:
    """What people write first: hooks store every carry; two separate passes; reduce at the end."""
    stored: dict[str, list[torch.Tensor]] = {"ref": [], "cand": []}
    for key, model in (("ref", reference), ("cand", candidate)):
        handle = model.L_level.register_forward_hook(lambda _m, _i, out, key=key: stored[key].append(out.detach().clone()))
        with torch.inference_mode():
            for inputs, ids, _ in data:
                list(model.steps(inputs, ids))
        handle.remove()
    # every L_level call was stored; the z_H updates are the last call of each (L+1)-group
    fid = [float(token_cosine(c, r).mean()) for c, r in zip(stored["cand"], stored["ref"], strict=True)]
    return fid[-1]


def part_memory(puzzles: int) -> None:
    two, sixteen = child(2, puzzles, False), child(16, puzzles, False)
    print(f"memory: peak RSS 16 steps {sixteen['rss_kb'] / 1024:.0f} MiB, 2 steps {two['rss_kb'] / 1024:.0f} MiB, "
          f"ratio {sixteen['rss_kb'] / two['rss_kb']:.2f} (target <= 1.1)")


def part_naive(puzzles: int) -> None:
    engine, naive = child(16, puzzles, False), child(16, puzzles, True)
    time_ratio = engine["seconds"] / naive["seconds"]
    rss_ratio = engine["rss_kb"] / naive["rss_kb"]
    print(f"naive harness: time {naive['seconds']:.2f} s vs engine {engine['seconds']:.2f} s (engine/naive {time_ratio:.2f}); "
          f"peak RSS {naive['rss_kb'] / 1024:.0f} MiB vs {engine['rss_kb'] / 1024:.0f} MiB (engine/naive {rss_ratio:.2f})")


def part_cache(puzzles: int) -> None:
    import tempfile
    from pathlib import Path

    from carrygate.models.checkpoint import load_checkpoint
    from carrygate.models.evaluate import Probe, evaluate
    from carrygate.models.reference_cache import ReferenceCache
    from carrygate.models.tasks.dataset import read_split

    zoo = Path(__file__).resolve().parents[1] / "models" / "zoo" / "sudoku-mlp"
    model = load_checkpoint(zoo).model
    probe = Probe.from_split(read_split(zoo / "data", "test"), puzzles)
    cache = ReferenceCache(Path(tempfile.mkdtemp(prefix="carrygate-refcache-")))
    run = partial(evaluate, model, SPECS, probe, batch_size=64, with_footprint=False, compile_steps=False)
    plain = timed(run)
    first = timed(partial(run, reference_cache=cache))
    second = timed(partial(run, reference_cache=cache))
    plain_again = timed(run)
    [entry] = cache.root.glob("*.safetensors")
    base = min(plain, plain_again)
    print(f"reference cache, sudoku-mlp, {puzzles} puzzles, K = {len(SPECS)} + noise floor: no cache {plain:.2f} / {plain_again:.2f} s, "
          f"miss + store {first:.2f} s ({first / base:.2f}x), hit {second:.2f} s; hit / no cache {second / base:.2f} (target <= 0.85); "
          f"trace {entry.stat().st_size / 2**20:.1f} MiB ({entry.stat().st_size / puzzles / 1024:.1f} KiB per puzzle)")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _rss_child(int(sys.argv[2]), int(sys.argv[3]), bool(int(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="all", choices=["mfu", "sharing", "memory", "naive", "cache", "all"])
    parser.add_argument("--puzzles", type=int, default=128)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    for name, fn in (("mfu", part_mfu), ("sharing", part_sharing), ("memory", part_memory), ("naive", part_naive), ("cache", part_cache)):
        if args.part in (name, "all"):
            fn(args.puzzles)


if __name__ == "__main__":
    main()
