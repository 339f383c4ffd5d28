"""Signal validity on every zoo model whose reference reasons: `carrygate validate` per model, then
the shipped predicted-drop calibration refitted on all of them, then the docs table.

    python bench/signal_validity.py [--limit 500] [--models sudoku-mlp ...] [--min-exact 0.5] [--skip-existing]

Writes results/validity-<model>.json, then refits models/drop_calibration.json on every
results/validity-*.json, writes the leave-one-model-out check (results/lomo-predicted-drop.json) and
docs/validity.md. A model
whose reference solves fewer than --min-exact of its held-out split is skipped and named: its
candidates cannot lose what the reference never had, so validity cannot be measured on it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CG = [str(Path(sys.executable).with_name("carrygate"))]


def reference_exact(card: Path) -> float | None:
    body = json.loads(card.read_text())
    for key in ("test", "held_out", "heldout"):
        if isinstance(body.get(key), dict) and "puzzle_exact" in body[key]:
            return float(body[key]["puzzle_exact"])
    return float(body["puzzle_exact"]) if "puzzle_exact" in body else None


def write_lomo(files: list[Path], out: Path) -> None:
    """Leave one model out: each model's candidates predicted by a calibration fitted on the others."""
    sys.path.insert(0, str(ROOT))
    from carrygate.app.cli.validate import read_result
    from carrygate.models.validity import leave_one_model_out

    report = leave_one_model_out({f.stem.removeprefix("validity-"): read_result(f) for f in files})
    body = {"models": {name: p.model_dump(mode="json") for name, p in report.items()}, "sources": [f.name for f in files]}
    out.write_text(json.dumps(body, indent=1))
    for name, p in report.items():
        print(f"leave {name} out: 90% coverage {p.coverage:.2f}, MAE {p.mae * 100:.2f} pp (n {p.n})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--min-exact", type=float, default=0.5)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--skip-existing", action="store_true",
                        help="A model whose results file exists is not re-evaluated; its report is recomputed from it.")
    args = parser.parse_args()
    for folder in sorted((ROOT / "models" / "zoo").iterdir()):
        if not (folder / "card.json").is_file() or (args.models and folder.name not in args.models):
            continue
        exact = reference_exact(folder / "card.json")
        if exact is None or exact < args.min_exact:
            print(f"skip {folder.name}: reference puzzle-exact {exact} < {args.min_exact}")
            continue
        out = ROOT / "results" / f"validity-{folder.name}.json"
        again = ["--from-result", str(out)] if args.skip_existing and out.is_file() else []
        subprocess.run([*CG, "validate", str(folder), "--limit", str(args.limit), "--resamples", str(args.resamples), "--json", str(out),
                        *again], check=True, cwd=ROOT)
    every = sorted((ROOT / "results").glob("validity-*.json"))  # this run's and earlier runs' models
    if every:
        calibration = ROOT / "models" / "drop_calibration.json"
        subprocess.run([*CG, "calibrate", *map(str, every), "--out", str(calibration)], check=True, cwd=ROOT)
    if len(every) > 1:
        write_lomo(every, ROOT / "results" / "lomo-predicted-drop.json")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "validity_table.py"), "--out", str(ROOT / "docs" / "validity.md")],
                   check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
