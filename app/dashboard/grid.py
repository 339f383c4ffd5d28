"""Depth x precision grid: which candidates are grid cells, the newest measurement per cell, heatmaps.

A candidate is a cell when its spec, without `depth`, equals one of `models.compress.grids.PRECISIONS`
and its depth changes `H_cycles` only (the specs `carrygate sweep --grid precision-depth` makes).
The cheapest passing cell is the `go` cell with the fewest GFLOPs per puzzle, then the fewest weight bytes,
leaving out fp32 at the checkpoint's own depth: that cell is the reference itself, a check that fidelity is 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from carrygate.app.dashboard.data import Trace, config_value, load_jobs, points_of
from carrygate.models.compress.grids import PRECISIONS
from carrygate.models.compress.spec import CompressionSpec
from carrygate.store.tables import Checkpoint


def _precision_hashes() -> dict[str, str]:
    return {name: CompressionSpec.model_validate(body).content_hash for name, body in PRECISIONS.items()}


def grid_cell(spec: dict[str, Any], full_depth: int | None) -> tuple[str, int] | None:
    """(precision label, H_cycles) when the spec is a cell of the depth x precision grid, else None."""
    body = {k: v for k, v in spec.items() if k not in ("name", "depth")}
    depth = spec.get("depth") or {}
    if set(depth) - {"H_cycles"} or any(v is not None for k, v in depth.items() if k != "H_cycles"):
        return None
    try:
        content = CompressionSpec.model_validate(body).content_hash
    except ValueError:
        return None
    precision = next((name for name, h in _precision_hashes().items() if h == content), None)
    h_cycles = depth.get("H_cycles") or full_depth
    if precision is None or h_cycles is None:
        return None
    return precision, int(h_cycles)


@dataclass
class GridCell:
    precision: str
    h_cycles: int
    candidate: str
    job_id: str
    fidelity: float | None
    puzzle_exact: float | None
    gflops_per_puzzle: float | None
    total_bytes: int | None
    decision: str | None
    is_reference: bool = False
    """fp32 at the checkpoint's own depth: the reference itself (a check, never the answer to "what to ship")."""


@dataclass
class GridView:
    checkpoint_id: str | None
    precisions: list[str] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    cells: dict[tuple[str, int], GridCell] = field(default_factory=dict)
    cheapest: GridCell | None = None

    def matrix(self, attribute: str) -> list[list[float | None]]:
        """Rows = depths (ascending), columns = precisions; None where the cell was not evaluated."""
        return [[getattr(self.cells[(p, h)], attribute) if (p, h) in self.cells else None for p in self.precisions] for h in self.depths]


def grid_checkpoints(session: Session) -> list[tuple[Checkpoint, int]]:
    """Checkpoints with at least one grid cell and how many distinct cells, most cells first (then newest):
    a plain sweep also holds a few full-depth cells, a grid job holds them all."""
    cells: dict[str, set[tuple[str, int]]] = {}
    checkpoints: dict[str, Checkpoint] = {}
    for job in load_jobs(session, status="succeeded", with_result=False):
        full = config_value(job.checkpoint, "H_cycles")
        found = {cell for c in job.candidates if (cell := grid_cell(c.spec, full)) is not None}
        if found:
            cells.setdefault(job.checkpoint_id, set()).update(found)
            checkpoints[job.checkpoint_id] = job.checkpoint
    newest_first = sorted(checkpoints.values(), key=lambda c: c.created_at, reverse=True)
    return sorted(((c, len(cells[c.id])) for c in newest_first), key=lambda pair: -pair[1])


def grid_view(session: Session, checkpoint_id: str) -> GridView:
    """The newest measurement of each grid cell over the checkpoint's succeeded jobs; the cheapest passing cell is the
    compressed (not reference) `go` cell with the fewest GFLOPs per puzzle, ties broken by the fewest weight bytes."""
    view = GridView(checkpoint_id=checkpoint_id)
    for job in load_jobs(session, status="succeeded", checkpoint_id=checkpoint_id):
        full = config_value(job.checkpoint, "H_cycles")
        for p in points_of(job):
            cell = grid_cell(p.spec, full)
            if cell is None or cell in view.cells:
                continue
            view.cells[cell] = GridCell(precision=cell[0], h_cycles=cell[1], candidate=p.candidate, job_id=p.job_id, fidelity=p.fidelity,
                                        puzzle_exact=p.puzzle_exact, gflops_per_puzzle=p.gflops_per_puzzle, total_bytes=p.total_bytes,
                                        decision=p.decision, is_reference=cell == ("fp32", full))
    present = {precision for precision, _ in view.cells}
    view.precisions = [name for name in PRECISIONS if name in present]
    view.depths = sorted({h for _, h in view.cells})
    passing = [c for c in view.cells.values() if c.decision == "go" and not c.is_reference]
    if passing:
        view.cheapest = min(passing, key=lambda c: (c.gflops_per_puzzle if c.gflops_per_puzzle is not None else math.inf,
                                                    c.total_bytes if c.total_bytes is not None else math.inf))
    return view


def heatmap_traces(view: GridView, attribute: str, title: str) -> list[Trace]:
    """A heatmap of `attribute`; each cell's text holds the value, GFLOPs per puzzle and the verdict, and
    "★ cheapest" on the cheapest passing cell (`cheapest_shapes` outlines it)."""
    y = [f"H{h}" for h in view.depths]
    values = view.matrix(attribute)
    gflops = view.matrix("gflops_per_puzzle")
    decisions = view.matrix("decision")
    cheapest = (view.cheapest.precision, view.cheapest.h_cycles) if view.cheapest else None
    references = {key for key, cell in view.cells.items() if cell.is_reference}
    text = [[("" if v is None else f"{v:.4f}") + ("" if g is None else f"<br>{g:.2f} GFLOP") + ("" if d is None else f"<br>{d}")
             + (" (reference)" if (p, h) in references else "") + ("<br><b>★ cheapest</b>" if (p, h) == cheapest else "")
             for p, v, g, d in zip(view.precisions, row, grow, drow, strict=True)]
            for h, row, grow, drow in zip(view.depths, values, gflops, decisions, strict=True)]
    return [{"type": "heatmap", "name": title, "x": view.precisions, "y": y, "z": values, "text": text, "texttemplate": "%{text}",
              "hovertemplate": f"%{{x}} %{{y}}<br>{title} %{{z:.4f}}<extra></extra>",
             "colorscale": "Viridis", "hoverongaps": False}]


def cheapest_shapes(view: GridView) -> list[dict[str, Any]]:
    """A thick outline around the cheapest passing cell (category axes take positions as indices)."""
    if view.cheapest is None:
        return []
    x, y = view.precisions.index(view.cheapest.precision), view.depths.index(view.cheapest.h_cycles)
    return [{"type": "rect", "xref": "x", "yref": "y", "x0": x - 0.5, "x1": x + 0.5, "y0": y - 0.5, "y1": y + 0.5,
             "line": {"color": "#ffd400", "width": 4}, "name": "cheapest passing"}]
