"""Signal validity on every zoo model whose reference reasons: `carrygate validate` per model, then
the shipped predicted-drop calibration refitted on all of them, then the docs table.

    python bench/signal_validity.py [--limit 500] [--models sudoku-mlp ...] [--min-exact 0.5]

Writes results/validity-<model>.json, models/drop_calibration.json and docs/validity.md. A model
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--models", nargs="*")
    parser.add_argument("--min-exact", type=float, default=0.5)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    written = []
    for folder in sorted((ROOT / "models" / "zoo").iterdir()):
        if not (folder / "card.json").is_file() or (args.models and folder.name not in args.models):
            continue
        exact = reference_exact(folder / "card.json")
        if exact is None or exact < args.min_exact:
            print(f"skip {folder.name}: reference puzzle-exact {exact} < {args.min_exact}")
            continue
        out = ROOT / "results" / f"validity-{folder.name}.json"
        subprocess.run([*CG, "validate", str(folder), "--limit", str(args.limit), "--resamples", str(args.resamples), "--json", str(out)],
                       check=True, cwd=ROOT)
        written.append(out)
    if written:
        calibration = ROOT / "models" / "drop_calibration.json"
        subprocess.run([*CG, "calibrate", *map(str, written), "--out", str(calibration)], check=True, cwd=ROOT)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "validity_table.py"), "--out", str(ROOT / "docs" / "validity.md")],
                   check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
