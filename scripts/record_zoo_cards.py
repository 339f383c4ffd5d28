"""Add the per-puzzle record (`test.cells_correct`) to zoo cards written before `carrygate train` kept it.

    OMP_NUM_THREADS=1 python scripts/record_zoo_cards.py [NAME ...]

Each model is evaluated on its shipped held-out split exactly as training scored it (`models.train.evaluate`).
The record is written only when that run reproduces the card's numbers (count, cell accuracy and puzzle-exact
within 1e-6); a card it does not reproduce is reported and left as it is. tests/unit/test_cli.py then checks
a prefix of every split against the record, puzzle by puzzle, instead of re-running all 1,000 puzzles.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(names: list[str]) -> int:
    from carrygate.models.checkpoint import load_checkpoint
    from carrygate.models.tasks.dataset import read_split
    from carrygate.models.train import evaluate

    zoo = ROOT / "models" / "zoo"
    failed = 0
    for folder in [zoo / n for n in names] if names else sorted(p for p in zoo.iterdir() if (p / "card.json").is_file()):
        card = json.loads((folder / "card.json").read_text())
        scores = evaluate(load_checkpoint(folder).model, read_split(folder / "data", "test"), record=True)
        same = scores["count"] == card["test"]["count"] and all(
            abs(scores[k] - card["test"][k]) <= 1e-6 for k in ("cell_accuracy", "puzzle_exact"))
        if not same:
            failed += 1
            print(f"{folder.name}: NOT reproduced ({ {k: scores[k] for k in ('count', 'cell_accuracy', 'puzzle_exact')} } vs "
                  f"{ {k: card['test'][k] for k in ('count', 'cell_accuracy', 'puzzle_exact')} }); card left as it is")
            continue
        card["test"]["cells_correct"] = scores["cells_correct"]
        (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        print(f"{folder.name}: reproduced {card['test']['puzzle_exact']:.4f}; record of {len(scores['cells_correct'])} puzzles written")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
