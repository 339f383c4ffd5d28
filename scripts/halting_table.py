"""Fixed and adaptive halting side by side, from evaluation results (`carrygate sweep ... --halting adaptive --json`).

A result evaluated under `halting: adaptive` holds both: its ordinary fields are the fixed-depth evaluation
(every puzzle runs max_steps ACT steps, exactly as under `halting: fixed`), and each model's `adaptive`
block the same models stopped per puzzle at their own first halting step. One Markdown table per file:

    python scripts/halting_table.py results/sudoku-mlp-adaptive.json [more.json ...]   # default: results/*.json
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from carrygate.models.results import EvaluationResult, ModelResult  # noqa: E402

COLUMNS = ["candidate", "fixed: fidelity", "fixed: exact", "fixed: Δ exact", "fixed: GFLOP", "adaptive: steps (p95)",
           "same halting step", "earlier / later", "adaptive: answer agr.", "adaptive: exact", "adaptive: Δ exact",
           "adaptive: GFLOP"]


def _f(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def row(model: ModelResult, is_reference: bool) -> list[str]:
    a, fp = model.adaptive, model.footprint
    name = f"*{model.name}*" if is_reference else model.name
    if model.non_finite is not None:
        return [f"{name} (non-finite @ step {model.non_finite.step})"] + ["—"] * (len(COLUMNS) - 1)
    fixed = ["1 (ref)" if is_reference else _f(model.fidelity.mean if model.fidelity else None, 4), _f(model.puzzle_exact),
             "" if is_reference else _f(model.delta_puzzle_exact, signed=True), _f(fp.gflops_per_puzzle if fp else None, 2)]
    if a is None:
        return [name, *fixed] + ["—"] * 7
    adaptive = [f"{_f(a.steps_used.mean, 2)} ({_f(a.steps_used.p95, 0)})",
                "" if is_reference else _f(a.halting_step_agreement),
                "" if is_reference else f"{_f(a.halts_earlier, 2)} / {_f(a.halts_later, 2)}",
                "" if is_reference else _f(a.answer_agreement),
                _f(a.puzzle_exact), "" if is_reference else _f(a.delta_puzzle_exact, signed=True), _f(a.gflops_per_puzzle, 2)]
    return [name, *fixed, *adaptive]


def table(result: EvaluationResult) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join([":--"] + ["--:"] * (len(COLUMNS) - 1)) + "|"]
    for i, model in enumerate([result.reference, *result.candidates]):
        lines.append("| " + " | ".join(row(model, i == 0)) + " |")
    return "\n".join(lines)


def main(paths: list[str]) -> int:
    files = [Path(p) for p in paths] or sorted((REPO / "results").glob("*.json"))
    shown = 0
    for path in files:
        try:
            result = EvaluationResult.model_validate_json(path.read_text())
        except ValueError:
            continue  # not an evaluation result (a grid summary, a calibration, ...)
        ref = result.reference.adaptive
        rule = f"adaptive: {ref.rule}, at most {ref.max_steps} steps" if ref else "no adaptive block (evaluated under halting: fixed)"
        print(f"### {path.name}: {result.puzzles} puzzles, {'labels' if result.labels else 'no labels'}; {rule}\n")
        print(table(result) + "\n")
        shown += 1
    if not shown:
        print("no evaluation results found", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
