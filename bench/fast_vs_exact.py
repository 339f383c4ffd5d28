"""Does the fast path change a verdict? The demo sweep on every reasoning zoo model, exact vs fast.

For each zoo model that reasons (its card: puzzle-exact >= 0.6 held-out and on a fresh probe), the
demo's candidates (`carrygate demo`: DEMO_SPECS from the paper grid) run twice on the same probe
puzzles, side by side: `numerics="exact"` (the official eager step) and `numerics="fast"` (eager,
as a demo-sized job runs; `--compile` runs the fast path compiled instead). Both are judged by the
default gate policy. Writes one JSON with, per model and candidate, both decisions, both values of
every number a rule reads, and the largest difference; prints a summary.

    python bench/fast_vs_exact.py [--puzzles 32] [--compile] [--json results/fast-vs-exact.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from carrygate.app.cli.demo import DEMO_SPECS, zoo_models
from carrygate.gate import GatePolicy, judge
from carrygate.models.checkpoint import load_checkpoint
from carrygate.models.compress.grids import PAPER
from carrygate.models.compress.spec import CompressionSpec
from carrygate.models.evaluate import Probe, evaluate
from carrygate.models.tasks.dataset import read_split

NUMBERS = ("puzzle_exact", "cell_accuracy", "answer_agreement", "settled_agreement", "logit_kl_mean")


def _values(model: Any) -> dict[str, float | None]:
    body = model.model_dump(mode="json")
    out = {name: body.get(name) for name in NUMBERS}
    out["fidelity"] = (body.get("fidelity") or {}).get("mean")
    out["predicted_exact_drop"] = (body.get("predicted_puzzle_exact_drop") or {}).get("mean")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puzzles", type=int, default=32)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--json", type=Path, default=Path("results/fast-vs-exact.json"))
    args = parser.parse_args()
    specs = [CompressionSpec.model_validate({"name": name, **PAPER[name]}) for name in DEMO_SPECS]
    policy = GatePolicy()
    rows: list[dict[str, Any]] = []
    seconds = {"exact": 0.0, "fast": 0.0}
    for folder in zoo_models():
        model = load_checkpoint(folder).model
        probe = Probe.from_split(read_split(folder / "data", "test"), args.puzzles)
        runs = {}
        for numerics in ("exact", "fast"):
            start = time.perf_counter()
            result = evaluate(model, specs, probe, numerics=numerics, compile_steps=args.compile and numerics == "fast")  # type: ignore[arg-type]
            seconds[numerics] += time.perf_counter() - start
            verdict = judge(result, policy)
            runs[numerics] = {c.name: (d.decision, _values(c)) for c, d in zip(result.candidates, verdict.candidates, strict=True)}
        for name, (exact_decision, exact_values) in runs["exact"].items():
            fast_decision, fast_values = runs["fast"][name]
            diffs = [abs(a - b) for k in exact_values if (a := exact_values[k]) is not None and (b := fast_values[k]) is not None]
            rows.append({"model": folder.name, "candidate": name, "exact": exact_decision, "fast": fast_decision,
                         "max_abs_difference": max(diffs, default=0.0), "exact_values": exact_values, "fast_values": fast_values})
        print(f"{folder.name}: {sum(r['exact'] != r['fast'] for r in rows if r['model'] == folder.name)} verdict change(s)")
    changed = [r for r in rows if r["exact"] != r["fast"]]
    body = {"command": f"python bench/fast_vs_exact.py --puzzles {args.puzzles}{' --compile' if args.compile else ''}",
            "date": time.strftime("%Y-%m-%d"), "puzzles": args.puzzles, "compiled": args.compile, "seconds": seconds, "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(body, indent=1))
    largest = max(r["max_abs_difference"] for r in rows)
    print(f"{len(rows)} verdicts, {len(changed)} changed; largest difference in any number a rule reads: {largest:.3g}; "
          f"exact {seconds['exact']:.1f} s, fast {seconds['fast']:.1f} s; wrote {args.json}")
    for r in changed:
        print(f"  changed: {r['model']} {r['candidate']}: exact {r['exact']} -> fast {r['fast']}")


if __name__ == "__main__":
    main()
