"""Markdown table of a sweep result JSON (README "Reproducing the paper").

    python scripts/sweep_table.py RESULT.json [RESULT.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ["candidate", "fidelity", "p05", "fid. z_L", "answer agr.", "consec. sim", "cell acc", "puzzle exact", "Δ exact", "MB",
           "SRAM stream MB", "GFLOP/puzzle"]


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(path: Path) -> str:
    result = json.loads(path.read_text())
    ref = result["reference"]
    rows = [
        f"**{path.stem}** — {result['puzzles']} held-out puzzles; reference cell accuracy {fmt(ref['cell_accuracy'])}, "
        f"puzzle-exact {fmt(ref['puzzle_exact'])}, consecutive similarity {fmt(ref['consecutive_similarity']['mean'], 4)}",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for c in result["candidates"]:
        fp = c.get("footprint") or {}
        fid, fid_l = c.get("fidelity") or {}, c.get("fidelity_z_L") or {}
        name = c["name"] + (f" (non-finite at step {c['non_finite']['step']})" if c.get("non_finite") else "")
        cells = [name, fmt(fid.get("mean"), 4), fmt(fid.get("p05"), 4), fmt(fid_l.get("mean"), 4), fmt(c.get("answer_agreement")),
                 fmt(c["consecutive_similarity"]["mean"], 4), fmt(c.get("cell_accuracy")), fmt(c.get("puzzle_exact")),
                 fmt(c.get("delta_puzzle_exact")), f"{fp.get('total_bytes', 0) / 2**20:.3f}",
                 f"{fp.get('sram_streaming_bytes', 0) / 2**20:.2f}", fmt(fp.get("gflops_per_puzzle"), 2)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print("\n\n".join(table(Path(p)) for p in sys.argv[1:]))
