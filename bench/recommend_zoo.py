"""`recommend` on a zoo model, measured against today's grid, uniform INT8 and the paper's recipe in one run.

    OMP_NUM_THREADS=1 python bench/recommend_zoo.py sudoku6-mlp [--limit 500] [--search-puzzles 128]

Side by side, on the same held-out probe (the zoo folder's data/test, first --limit puzzles):
1. today's depth x precision grid as ONE 10-candidate job (`precision_depth_grid`), timed; each cell
   judged by the default gate policy;
2. the paper's recipe: calibrated INT4 with the token mixer kept in float (`*mlp_t*` for MLP mixing,
   the attention projections for attention);
3. `recommend` with a weight budget of 25 % of fp32 and --max-predicted-drop 0.02, timed;
then the ratio of (3)'s wall time to (1)'s. Writes results/recommend-<model>.json
(docs/recommend.md is generated from those files by scripts/recommend_docs.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--search-puzzles", type=int, default=128)
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--max-predicted-drop", type=float, default=0.02)
    args = parser.parse_args()

    import torch

    from carrygate.gate import GatePolicy, judge
    from carrygate.models.checkpoint import load_checkpoint
    from carrygate.models.compress import CompressionSpec
    from carrygate.models.compress.grids import precision_depth_grid
    from carrygate.models.evaluate import Probe, evaluate
    from carrygate.models.recommend import Budget, Tolerance, recommend
    from carrygate.models.tasks.dataset import read_split

    folder = ROOT / "models" / "zoo" / args.model
    ckpt = load_checkpoint(folder)
    probe = Probe.from_split(read_split(folder / "data", "test"), args.limit)
    policy = GatePolicy()

    def cells(result: object, verdict: object) -> list[dict]:
        ref_bytes = result.reference.footprint.total_bytes  # type: ignore[attr-defined]
        out = []
        for c, v in zip(result.candidates, verdict.candidates, strict=True):  # type: ignore[attr-defined]
            drop = c.predicted_puzzle_exact_drop
            out.append({"name": c.name, "spec": c.spec, "weight_bytes": c.footprint.total_bytes,
                        "weight_fraction": c.footprint.total_bytes / ref_bytes, "fidelity": c.fidelity.mean if c.fidelity else None,
                        "predicted_drop_hi": drop.hi if drop else None, "puzzle_exact": c.puzzle_exact,
                        "delta_puzzle_exact": c.delta_puzzle_exact, "verdict": v.decision})
        return out

    grid = precision_depth_grid(ckpt.config)
    start = time.perf_counter()
    grid_result = evaluate(ckpt.model, grid, probe)
    grid_seconds = time.perf_counter() - start
    grid_cells = cells(grid_result, judge(grid_result, policy))
    print(f"grid: {len(grid)} candidates, {grid_seconds:.1f} s", flush=True)

    mixer = "*mlp_t*" if getattr(ckpt.config, "mlp_t", False) else "*self_attn*"
    recipe = CompressionSpec.model_validate({"name": "paper-recipe", "exclude": [mixer],
                                             "weights": {"method": "int4", "granularity": "per_channel", "symmetric": False}})
    recipe_result = evaluate(ckpt.model, [recipe], probe)
    recipe_cell = cells(recipe_result, judge(recipe_result, policy))[0]
    print(f"recipe: {recipe_cell}", flush=True)

    start = time.perf_counter()
    rec = recommend(ckpt.model, probe, Budget(max_weight_fraction=args.fraction), Tolerance(max_predicted_drop=args.max_predicted_drop),
                    search_puzzles=args.search_puzzles, checkpoint=str(folder.relative_to(ROOT)),
                    verdict_of=lambda result: judge(result, policy).decision,
                    on_progress=lambda stage, n: print(f"  {time.perf_counter() - start:7.1f} s {stage}: {n} evaluations", flush=True))
    rec_seconds = time.perf_counter() - start
    chosen = rec.chosen
    passing = [c for c in grid_cells if c["verdict"] == "go"]
    int8 = next(c for c in grid_cells if c["name"] == f"int8/H{ckpt.config.H_cycles}")
    checks = {
        "delta_within_2pp": None if chosen is None or chosen.damage.puzzle_exact_drop is None else chosen.damage.puzzle_exact_drop <= 0.02,
        "bytes_le_every_passing_grid_cell": None if chosen is None else all(chosen.cost.weight_bytes <= c["weight_bytes"] for c in passing),
        "bytes_le_uniform_int8": None if chosen is None else chosen.cost.weight_bytes <= int8["weight_bytes"],
        "cost_ratio_le_10": rec_seconds / grid_seconds <= 10.0,
        "probe_ge_500": len(probe) >= 500,
    }
    body = {
        "model": args.model,
        "policy": policy.model_dump(mode="json"),  # the gate that judged every verdict below
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "OMP_NUM_THREADS=1 python bench/recommend_zoo.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), shared 2-core host",
        "probe_puzzles": len(probe),
        "reference_puzzle_exact": grid_result.reference.puzzle_exact,
        "reference_bytes": grid_result.reference.footprint.total_bytes,  # type: ignore[union-attr]
        "budget_fraction": args.fraction,
        "max_predicted_drop": args.max_predicted_drop,
        "grid": {"candidates": len(grid), "seconds": grid_seconds, "cells": grid_cells},
        "recipe": recipe_cell,
        "recommend_seconds": rec_seconds,
        "cost_ratio": rec_seconds / grid_seconds,
        "checks": checks,
        "recommendation": json.loads(rec.model_dump_json()),
    }
    out = ROOT / "results" / f"recommend-{args.model}.json"
    out.write_text(json.dumps(body, indent=1) + "\n")
    print(json.dumps({"chosen": chosen.name if chosen else None, "verdict": rec.verdict, "checks": checks,
                      "ratio": body["cost_ratio"]}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
