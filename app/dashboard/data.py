"""Dashboard data: query jobs, results and verdicts and turn them into Plotly traces.

Everything the templates draw is shaped here, so that it can be tested without a browser. Traces are
plain JSON-able dicts (Plotly's figure format); non-finite numbers become None (JSON has no NaN).
Nothing here writes to the database.

Conventions:
- a "drop" is reference minus candidate (positive = the candidate lost accuracy), as in the gate;
- `method` is what a candidate's spec does, in words a legend can hold (`int4/per_tensor`, `bf16`, ...);
- the depth x precision grid recognises a candidate as a cell when its spec, without `depth`, equals one
  of `models.compress.grids.PRECISIONS` and its depth changes `H_cycles` only.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from models.compress.grids import PRECISIONS
from models.compress.spec import CompressionSpec
from workers.gate import GatePolicy
from workers.orm import JOB_SCOPE, Checkpoint, Job, ProbeSet, Verdict

Trace = dict[str, Any]

DECISION_SYMBOLS = {"go": "circle", "no_go": "x", "inconclusive": "diamond", None: "circle-open"}
DECISION_LABELS = {"go": "go", "no_go": "no-go", "inconclusive": "inconclusive", None: "no verdict"}
METHOD_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
MB = 1024 * 1024
SRAM_BUDGETS_MB = (8, 4)


def number(value: object) -> float | None:
    """A finite float, or None (missing, not a number, NaN or Inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _drop(reference: object, candidate: object) -> float | None:
    ref, cand = number(reference), number(candidate)
    return None if ref is None or cand is None else ref - cand


def method_of(spec: dict[str, Any] | None) -> str:
    """What a spec changes, e.g. `int8-channel`, `int4/per_tensor`, `prune-0.5`, `depth`, `bf16+carry-int8`; `fp32` for none."""
    spec = spec or {}
    parts: list[str] = []
    if spec.get("checkpoint"):
        parts.append("other-weights")
    if spec.get("depth"):
        parts.append("depth")
    if prune := spec.get("prune"):
        parts.append(f"prune-{prune.get('sparsity', '?'):g}" if isinstance(prune.get("sparsity"), int | float) else "prune")
    if emb := spec.get("puzzle_embedding"):
        parts.append(f"emb-{emb.get('method', '?')}")
    if weights := spec.get("weights"):
        method = str(weights.get("method", "?"))
        if method == "int4":
            method += "/" + str(weights.get("granularity", "per_channel"))
        parts.append(method)
    if spec.get("activations"):
        parts.append("act-int8")
    if precision := spec.get("precision"):
        if precision != "fp32":
            parts.append(str(precision))
    if spec.get("carry"):
        parts.append("carry-int8")
    return "+".join(parts) or "fp32"


def task_of(checkpoint: Checkpoint, probe: ProbeSet | None) -> str:
    """The task a job evaluated: the probe builder's name, else recognised from the model's vocabulary."""
    if probe is not None and probe.builder:
        return probe.builder
    config = (checkpoint.config or {}).get("config_json") or {}
    vocab, seq_len = config.get("vocab_size"), config.get("seq_len")
    if vocab == 11 and seq_len == 81:
        return "sudoku"
    if vocab == 6:
        return "maze"
    if vocab == 12:
        return "arc"
    return "unknown"


def _config_value(checkpoint: Checkpoint, key: str) -> Any:
    return ((checkpoint.config or {}).get("config_json") or {}).get(key)


# -- loading ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Filters:
    checkpoint_id: str | None = None
    task: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _jobs(session: Session, *, status: str | None = None, checkpoint_id: str | None = None,
          since: datetime | None = None, until: datetime | None = None) -> list[Job]:
    query = select(Job).options(selectinload(Job.checkpoint), selectinload(Job.probe_set), selectinload(Job.result),
                                selectinload(Job.candidates), selectinload(Job.verdicts).selectinload(Verdict.candidate))
    if status is not None:
        query = query.where(Job.status == status)
    if checkpoint_id is not None:
        query = query.where(Job.checkpoint_id == checkpoint_id)
    if since is not None:
        query = query.where(Job.created_at >= since)
    if until is not None:
        query = query.where(Job.created_at < until)
    return list(session.execute(query.order_by(Job.created_at.desc())).scalars())


@dataclass(frozen=True)
class CandidatePoint:
    """One evaluated candidate of one finished job, with the numbers the overview plots."""

    job_id: str
    job_created_at: datetime
    checkpoint_id: str
    checkpoint_name: str
    task: str
    candidate: str
    spec: dict[str, Any]
    spec_hash: str | None
    method: str
    decision: str | None
    fidelity: float | None
    fidelity_p05: float | None
    answer_agreement: float | None
    puzzle_exact: float | None
    puzzle_exact_drop: float | None
    cell_accuracy_drop: float | None
    gflops_per_puzzle: float | None
    total_bytes: int | None


def _decisions(job: Job) -> dict[str, str]:
    return {v.candidate.name: v.decision for v in job.verdicts if v.scope != JOB_SCOPE and v.candidate is not None}


def points_of(job: Job) -> list[CandidatePoint]:
    """The candidates of a finished job (none when it has no result)."""
    if job.result is None:
        return []
    body, decisions = job.result.body, _decisions(job)
    reference = body.get("reference") or {}
    hashes = {c.name: c.spec_hash for c in job.candidates}
    task = task_of(job.checkpoint, job.probe_set)
    points = []
    for cand in body.get("candidates", []):
        fidelity, footprint = cand.get("fidelity") or {}, cand.get("footprint") or {}
        points.append(CandidatePoint(
            job_id=job.id, job_created_at=job.created_at, checkpoint_id=job.checkpoint_id,
            checkpoint_name=job.checkpoint.original_name or job.checkpoint.sha256[:12], task=task, candidate=cand["name"],
            spec=cand.get("spec") or {}, spec_hash=cand.get("spec_hash") or hashes.get(cand["name"]), method=method_of(cand.get("spec")),
            decision=decisions.get(cand["name"]), fidelity=number(fidelity.get("mean")), fidelity_p05=number(fidelity.get("p05")),
            answer_agreement=number(cand.get("answer_agreement")), puzzle_exact=number(cand.get("puzzle_exact")),
            puzzle_exact_drop=_drop(reference.get("puzzle_exact"), cand.get("puzzle_exact")),
            cell_accuracy_drop=_drop(reference.get("cell_accuracy"), cand.get("cell_accuracy")),
            gflops_per_puzzle=number(footprint.get("gflops_per_puzzle")),
            total_bytes=int(footprint["total_bytes"]) if isinstance(footprint.get("total_bytes"), int) else None,
        ))
    return points


def load_points(session: Session, filters: Filters) -> tuple[list[CandidatePoint], list[Job]]:
    """Every candidate of the succeeded jobs that pass the filters, and those jobs (newest first)."""
    jobs = _jobs(session, status="succeeded", checkpoint_id=filters.checkpoint_id, since=filters.since, until=filters.until)
    if filters.task:
        jobs = [j for j in jobs if task_of(j.checkpoint, j.probe_set) == filters.task]
    return [p for job in jobs for p in points_of(job)], jobs


def recent_jobs(session: Session, limit: int = 20) -> list[Job]:
    return list(session.execute(select(Job).options(selectinload(Job.checkpoint), selectinload(Job.verdicts))
                                .order_by(Job.created_at.desc()).limit(limit)).scalars())


def job_decision(job: Job) -> str | None:
    return next((v.decision for v in job.verdicts if v.scope == JOB_SCOPE), None)


# -- overview --------------------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _hover(p: CandidatePoint) -> str:
    spec = ", ".join(f"{k}: {v}" for k, v in p.spec.items() if k != "name") or "reference precision"
    return (f"<b>{p.candidate}</b> ({p.checkpoint_name})<br>{spec}<br>fidelity {_fmt(p.fidelity)} (p05 {_fmt(p.fidelity_p05)})"
            f"<br>puzzle-exact drop {_fmt(p.puzzle_exact_drop, 3)}, cell-accuracy drop {_fmt(p.cell_accuracy_drop, 3)}"
            f"<br>answer agreement {_fmt(p.answer_agreement, 3)}<br>verdict {DECISION_LABELS.get(p.decision, p.decision)}")


def scatter_traces(points: list[CandidatePoint], y: str) -> list[Trace]:
    """Fidelity (x) against `y` ("puzzle_exact_drop" or "cell_accuracy_drop"): one trace per method (its colour),
    the verdict as the marker symbol, the job id as customdata (a click opens the job). Points without
    the y value (no labels) or without a fidelity are left out."""
    by_method: dict[str, list[CandidatePoint]] = {}
    for p in points:
        if p.fidelity is not None and getattr(p, y) is not None:
            by_method.setdefault(p.method, []).append(p)
    traces = []
    for i, (method, group) in enumerate(sorted(by_method.items())):
        traces.append({
            "type": "scatter", "mode": "markers", "name": method,
            "x": [p.fidelity for p in group], "y": [getattr(p, y) for p in group],
            "customdata": [p.job_id for p in group], "text": [_hover(p) for p in group], "hovertemplate": "%{text}<extra></extra>",
            "marker": {"color": METHOD_COLOURS[i % len(METHOD_COLOURS)], "size": 11, "line": {"width": 1, "color": "#333"},
                       "symbol": [DECISION_SYMBOLS.get(p.decision, "circle-open") for p in group]},
        })
    return traces


def threshold_shapes(policy: GatePolicy, y: str) -> list[dict[str, Any]]:
    """The gate's lines: min fidelity mean (vertical) and, on the puzzle-exact panel, the max drop (horizontal)."""
    line = {"color": "#555", "width": 1.5, "dash": "dash"}
    shapes: list[dict[str, Any]] = []
    if policy.min_fidelity_mean is not None:
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": policy.min_fidelity_mean, "x1": policy.min_fidelity_mean,
                       "y0": 0, "y1": 1, "line": line, "name": "min_fidelity_mean"})
    limit = policy.max_puzzle_exact_drop if y == "puzzle_exact_drop" else policy.max_cell_accuracy_drop
    if limit is not None:
        shapes.append({"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": limit, "y1": limit, "line": line,
                       "name": "max_puzzle_exact_drop" if y == "puzzle_exact_drop" else "max_cell_accuracy_drop"})
    return shapes


def policy_of(jobs: list[Job]) -> GatePolicy:
    """The newest job's policy (the lines drawn), or the default one when there are no jobs."""
    for job in jobs:
        try:
            return GatePolicy.model_validate(job.policy or {})
        except ValueError:
            continue
    return GatePolicy()


# -- job page --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RuleRow:
    candidate: str
    decision: str
    rule: str
    observed: float | None
    threshold: float | None
    passed: bool | None
    reason: str


def verdict_rows(job: Job) -> list[RuleRow]:
    """Every rule of every candidate verdict, in candidate order."""
    verdicts = sorted((v for v in job.verdicts if v.scope != JOB_SCOPE and v.candidate is not None), key=lambda v: v.candidate.position)
    return [RuleRow(candidate=v.candidate.name, decision=v.decision, rule=str(r.get("rule")), observed=number(r.get("observed")),
                    threshold=number(r.get("threshold")), passed=r.get("passed"), reason=str(r.get("reason", "")))
            for v in verdicts for r in v.rules]


def job_reasons(job: Job) -> str | None:
    verdict = next((v for v in job.verdicts if v.scope == JOB_SCOPE), None)
    if verdict is None or not verdict.rules:
        return None
    return str(verdict.rules[0].get("reason") or "")


def _clean(values: list[Any]) -> list[float | None]:
    return [number(v) for v in values]


def step_traces(body: dict[str, Any]) -> list[Trace]:
    """Per-step fidelity (z_H vs the reference at the same ACT step) of every candidate, and the reference's
    consecutive-step similarity (dashed): a candidate that leaves the reference shows where in the recursion."""
    traces = []
    for cand in body.get("candidates", []):
        curve = _clean(cand.get("step_fidelity") or [])
        traces.append({"type": "scatter", "mode": "lines+markers", "name": cand["name"], "x": list(range(len(curve))), "y": curve,
                       "hovertemplate": f"{cand['name']}<br>step %{{x}}: fidelity %{{y:.5f}}<extra></extra>"})
    reference = body.get("reference") or {}
    consecutive = _clean((reference.get("consecutive_similarity") or {}).get("curve") or [])
    traces.append({"type": "scatter", "mode": "lines", "name": "reference consecutive similarity", "x": list(range(len(consecutive))),
                   "y": consecutive, "line": {"dash": "dash", "color": "#000"},
                   "hovertemplate": "reference<br>step %{x}: cos(z_H[t], z_H[t-1]) %{y:.5f}<extra></extra>"})
    return traces


def histogram_traces(body: dict[str, Any]) -> list[Trace]:
    """Per-puzzle fidelity of every candidate that has it, overlaid."""
    traces = []
    for cand in body.get("candidates", []):
        values = [v for v in _clean((cand.get("per_puzzle") or {}).get("fidelity") or []) if v is not None]
        if values:
            traces.append({"type": "histogram", "name": cand["name"], "x": values, "opacity": 0.6, "nbinsx": 30,
                           "hovertemplate": f"{cand['name']}<br>fidelity %{{x}}: %{{y}} puzzles<extra></extra>"})
    return traces


def footprint_traces(body: dict[str, Any]) -> list[Trace]:
    """Deployed weights and streaming SRAM peak (MB) of the reference and each candidate, grouped bars."""
    models = [body.get("reference") or {}, *body.get("candidates", [])]
    names, weights, sram = [], [], []
    for m in models:
        footprint = m.get("footprint")
        if not footprint:
            continue
        names.append(m.get("name", "?") if m is not body.get("reference") else f"{m.get('name', 'reference')} (reference)")
        weights.append(footprint["total_bytes"] / MB)
        sram.append(footprint["sram_streaming_bytes"] / MB)
    if not names:
        return []
    return [{"type": "bar", "name": "weights MB", "x": names, "y": weights, "hovertemplate": "%{x}: %{y:.3f} MB weights<extra></extra>"},
            {"type": "bar", "name": "SRAM streaming peak MB", "x": names, "y": sram,
             "hovertemplate": "%{x}: %{y:.3f} MB streaming SRAM<extra></extra>"}]


def budget_shapes() -> list[dict[str, Any]]:
    return [{"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": mb, "y1": mb, "name": f"{mb} MB budget",
             "line": {"color": "#b00" if mb == 4 else "#e69500", "dash": "dot", "width": 1.5}} for mb in SRAM_BUDGETS_MB]


# -- depth x precision grid ------------------------------------------------------------------------
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
    for job in _jobs(session, status="succeeded"):
        full = _config_value(job.checkpoint, "H_cycles")
        found = {cell for c in job.candidates if (cell := grid_cell(c.spec, full)) is not None}
        if found:
            cells.setdefault(job.checkpoint_id, set()).update(found)
            checkpoints[job.checkpoint_id] = job.checkpoint
    newest_first = sorted(checkpoints.values(), key=lambda c: c.created_at, reverse=True)
    return sorted(((c, len(cells[c.id])) for c in newest_first), key=lambda pair: -pair[1])


def grid_view(session: Session, checkpoint_id: str) -> GridView:
    """The newest measurement of each grid cell over the checkpoint's succeeded jobs; the cheapest passing cell is the
    `go` cell with the fewest GFLOPs per puzzle, ties broken by the fewest weight bytes."""
    view = GridView(checkpoint_id=checkpoint_id)
    for job in _jobs(session, status="succeeded", checkpoint_id=checkpoint_id):
        full = _config_value(job.checkpoint, "H_cycles")
        for p in points_of(job):
            cell = grid_cell(p.spec, full)
            if cell is None or cell in view.cells:
                continue
            view.cells[cell] = GridCell(precision=cell[0], h_cycles=cell[1], candidate=p.candidate, job_id=p.job_id, fidelity=p.fidelity,
                                        puzzle_exact=p.puzzle_exact, gflops_per_puzzle=p.gflops_per_puzzle, total_bytes=p.total_bytes,
                                        decision=p.decision)
    present = {precision for precision, _ in view.cells}
    view.precisions = [name for name in PRECISIONS if name in present]
    view.depths = sorted({h for _, h in view.cells})
    passing = [c for c in view.cells.values() if c.decision == "go"]
    if passing:
        view.cheapest = min(passing, key=lambda c: (c.gflops_per_puzzle if c.gflops_per_puzzle is not None else math.inf,
                                                    c.total_bytes if c.total_bytes is not None else math.inf))
    return view


def heatmap_traces(view: GridView, attribute: str, title: str) -> list[Trace]:
    """A heatmap of `attribute` (with GFLOPs/puzzle in each cell's text) and a star on the cheapest passing cell."""
    y = [f"H{h}" for h in view.depths]
    values = view.matrix(attribute)
    gflops = view.matrix("gflops_per_puzzle")
    decisions = view.matrix("decision")
    text = [[("" if v is None else f"{v:.4f}") + ("" if g is None else f"<br>{g:.2f} GFLOP") + ("" if d is None else f"<br>{d}")
             for v, g, d in zip(row, grow, drow, strict=True)] for row, grow, drow in zip(values, gflops, decisions, strict=True)]
    traces: list[Trace] = [{"type": "heatmap", "name": title, "x": view.precisions, "y": y, "z": values, "text": text,
                            "texttemplate": "%{text}", "hovertemplate": f"%{{x}} %{{y}}<br>{title} %{{z:.4f}}<extra></extra>",
                            "colorscale": "Viridis", "hoverongaps": False}]
    if view.cheapest is not None:
        traces.append({"type": "scatter", "mode": "markers", "name": "cheapest passing", "x": [view.cheapest.precision],
                       "y": [f"H{view.cheapest.h_cycles}"], "marker": {"symbol": "star", "size": 18, "color": "#ffd400", "opacity": 0.9,
                                                                       "line": {"width": 1.5, "color": "#000"}},
                       "hovertemplate": "cheapest passing cell: %{x} %{y}<extra></extra>"})
    return traces


# -- checkpoints and history -----------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointRow:
    checkpoint: Checkpoint
    family: str
    jobs: int
    latest_job: Job | None
    latest_decision: str | None
    candidate_decisions: dict[str, int]


def family_of(checkpoint: Checkpoint) -> str:
    """Successive versions of one model share the name they are registered or uploaded under."""
    return checkpoint.original_name or checkpoint.sha256[:12]


def checkpoint_rows(session: Session) -> list[CheckpointRow]:
    checkpoints = list(session.execute(select(Checkpoint).order_by(Checkpoint.created_at.desc())).scalars())
    jobs = _jobs(session)
    rows = []
    for ckpt in checkpoints:
        own = [j for j in jobs if j.checkpoint_id == ckpt.id]
        decided = next((j for j in own if job_decision(j) is not None), None)
        counts = Counter(v.decision for v in decided.verdicts if v.scope != JOB_SCOPE) if decided else Counter()
        rows.append(CheckpointRow(checkpoint=ckpt, family=family_of(ckpt), jobs=len(own), latest_job=own[0] if own else None,
                                  latest_decision=job_decision(decided) if decided else None, candidate_decisions=dict(counts)))
    return rows


def history_traces(session: Session, family: str) -> tuple[list[Trace], list[str]]:
    """Fidelity of each spec (by content hash) over the family's checkpoint versions, oldest first: one line per spec,
    named after the candidate's newest name. Returns the traces and the version labels (the x axis)."""
    versions = [c for c in session.execute(select(Checkpoint).order_by(Checkpoint.created_at)).scalars() if family_of(c) == family]
    labels = [f"v{i + 1} {c.sha256[:8]} ({c.created_at:%Y-%m-%d %H:%M})" for i, c in enumerate(versions)]
    series: dict[str, dict[str, float | None]] = {}
    names: dict[str, str] = {}
    for label, ckpt in zip(labels, versions, strict=True):
        version_names: dict[str, str] = {}
        for job in _jobs(session, status="succeeded", checkpoint_id=ckpt.id):  # newest first: the first value per spec wins
            for p in points_of(job):
                if p.spec_hash is None:
                    continue
                version_names.setdefault(p.spec_hash, p.candidate)
                series.setdefault(p.spec_hash, {}).setdefault(label, p.fidelity)
        names.update(version_names)  # versions run oldest first: the newest name wins
    traces = []
    for spec_hash, values in series.items():
        traces.append({"type": "scatter", "mode": "lines+markers", "name": names[spec_hash], "x": [x for x in labels if x in values],
                       "y": [values[x] for x in labels if x in values],
                       "hovertemplate": f"{names[spec_hash]} ({spec_hash[:10]})<br>%{{x}}<br>fidelity %{{y:.5f}}<extra></extra>"})
    return traces, labels


def families(session: Session) -> list[tuple[str, int]]:
    """(family, number of versions), most versions first."""
    counts = Counter(family_of(c) for c in session.execute(select(Checkpoint)).scalars())
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def cheapest_shapes(view: GridView) -> list[dict[str, Any]]:
    """A thick outline around the cheapest passing cell (category axes take positions as indices)."""
    if view.cheapest is None:
        return []
    x, y = view.precisions.index(view.cheapest.precision), view.depths.index(view.cheapest.h_cycles)
    return [{"type": "rect", "xref": "x", "yref": "y", "x0": x - 0.5, "x1": x + 0.5, "y0": y - 0.5, "y1": y + 0.5,
             "line": {"color": "#ffd400", "width": 4}, "name": "cheapest passing"}]
