"""Dashboard data: turn jobs, their typed results and verdicts into the points and Plotly traces the pages draw.

Everything the templates draw is shaped here, so that it can be tested without a browser. The rows
come from the dashboard's service (`app.services.dashboard`), which runs the queries and validates each
stored result into an `EvaluationResult`; nothing here runs SQL. Traces are plain JSON-able dicts
(Plotly's figure format); non-finite numbers become None (JSON has no NaN).

Conventions:
- a "drop" is reference minus candidate (positive = the candidate lost accuracy), as in the gate;
- `method` is what a candidate's spec does, as `models.compress.spec.describe` says it (`int4/per_tensor`, `bf16`, ...);
- grids and checkpoint history live in `grid.py` and `history.py`, on top of the loaders here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from carrygate.app.services import dashboard as service
from carrygate.gate import GatePolicy
from carrygate.models.compress.spec import CompressionSpec, describe
from carrygate.models.numbers import finite, fixed
from carrygate.models.results import EvaluationResult, ModelResult
from carrygate.store.tables import JOB_SCOPE, Checkpoint, Job, ProbeSet
from carrygate.store.vocabulary import JobStatus

Trace = dict[str, Any]

DECISION_SYMBOLS = {"go": "circle", "no_go": "x", "inconclusive": "diamond", None: "circle-open"}
DECISION_LABELS = {"go": "go", "no_go": "no-go", "inconclusive": "inconclusive", None: "no verdict"}
# 20 distinguishable colours (D3 category10, then its lighter partners): a demo shows about 15 methods.
METHOD_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
                  "#aec7e8", "#ff9896", "#98df8a", "#ffbb78", "#c5b0d5", "#c49c94", "#f7b6d2", "#393b79", "#dbdb8d", "#9edae5"]
OVERVIEW_JOB_LIMIT = 500
"""The overview plots the newest this many jobs (each result document holds per-puzzle arrays)."""
MB = 1024 * 1024
SRAM_BUDGETS_MB = (8, 4)


def _drop(reference: object, candidate: object) -> float | None:
    ref, cand = finite(reference), finite(candidate)
    return None if ref is None or cand is None else ref - cand


def method_of(spec: dict[str, Any] | None) -> str:
    """What a stored spec changes, in the words of the one describer, `models.compress.spec.describe`
    (`int4/per_tensor`, `prune-intermediate-0.5`, `depth-H_cycles=1+bf16+carry-int8`, `ort-dynamic`;
    `reference` for none), so the legend says what the CLI tables say. A spec this version no longer
    reads is `unrecognised spec`."""
    try:
        return describe(CompressionSpec.model_validate(spec or {}))
    except ValidationError:
        return "unrecognised spec"


def task_of(probe: ProbeSet | None) -> str:
    """The task a job evaluated, as its probe set stores it (`ProbeSet.task`); "unknown" when nothing said."""
    return (probe.task if probe is not None else None) or "unknown"


def config_value(checkpoint: Checkpoint, key: str) -> Any:
    return ((checkpoint.config or {}).get("config_json") or {}).get(key)


# -- loading ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Filters:
    checkpoint_id: str | None = None
    task: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def load_jobs(session: Session, *, status: JobStatus | None = None, checkpoint_id: str | None = None, since: datetime | None = None,
              until: datetime | None = None, with_result: bool = True, limit: int | None = None) -> list[Job]:
    """Evaluation jobs newest first (`app.services.dashboard.load_jobs`); `with_result=False` leaves the result documents unread."""
    return service.load_jobs(session=session, status=status, checkpoint_id=checkpoint_id, since=since, until=until,
                             with_result=with_result, limit=limit)


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
    """The candidates of a finished job (none when it has no result it can read)."""
    result = service.stored_result(job)
    if result is None:
        return []
    decisions = _decisions(job)
    hashes = {c.name: c.spec_hash for c in job.candidates}
    task = task_of(job.probe_set)
    reference = result.reference
    points = []
    for cand in result.candidates:
        fidelity, footprint = cand.fidelity, cand.footprint
        points.append(CandidatePoint(
            job_id=job.id, job_created_at=job.created_at, checkpoint_id=job.checkpoint_id,
            checkpoint_name=job.checkpoint.original_name or job.checkpoint.sha256[:12], task=task, candidate=cand.name,
            spec=cand.spec or {}, spec_hash=cand.spec_hash or hashes.get(cand.name), method=method_of(cand.spec),
            decision=decisions.get(cand.name), fidelity=finite(fidelity.mean) if fidelity else None,
            fidelity_p05=finite(fidelity.p05) if fidelity else None,
            answer_agreement=finite(cand.answer_agreement), puzzle_exact=finite(cand.puzzle_exact),
            puzzle_exact_drop=_drop(reference.puzzle_exact, cand.puzzle_exact),
            cell_accuracy_drop=_drop(reference.cell_accuracy, cand.cell_accuracy),
            gflops_per_puzzle=finite(footprint.gflops_per_puzzle) if footprint else None,
            total_bytes=footprint.total_bytes if footprint else None,
        ))
    return points


def load_points(session: Session, filters: Filters) -> tuple[list[CandidatePoint], list[Job]]:
    """Every candidate of the newest `OVERVIEW_JOB_LIMIT` succeeded jobs that pass the filters, and those jobs (newest first)."""
    jobs = load_jobs(session, status="succeeded", checkpoint_id=filters.checkpoint_id, since=filters.since, until=filters.until,
                     limit=OVERVIEW_JOB_LIMIT)
    if filters.task:
        jobs = [j for j in jobs if task_of(j.probe_set) == filters.task]
    return [p for job in jobs for p in points_of(job)], jobs


def recent_jobs(session: Session, limit: int = 20) -> list[Job]:
    return service.recent_jobs(session=session, limit=limit)


def job_decision(job: Job) -> str | None:
    return next((v.decision for v in job.verdicts if v.scope == JOB_SCOPE), None)


# -- overview --------------------------------------------------------------------------------------
def _hover(p: CandidatePoint) -> str:
    spec = ", ".join(f"{k}: {v}" for k, v in p.spec.items() if k != "name") or "reference precision"
    return (f"<b>{p.candidate}</b> ({p.checkpoint_name})<br>{spec}<br>fidelity {fixed(p.fidelity)} (p05 {fixed(p.fidelity_p05)})"
            f"<br>puzzle-exact drop {fixed(p.puzzle_exact_drop, 3)}, cell-accuracy drop {fixed(p.cell_accuracy_drop, 3)}"
            f"<br>answer agreement {fixed(p.answer_agreement, 3)}<br>verdict {DECISION_LABELS.get(p.decision, p.decision)}")


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
    return [RuleRow(candidate=v.candidate.name, decision=v.decision, rule=str(r.get("rule")), observed=finite(r.get("observed")),
                    threshold=finite(r.get("threshold")), passed=r.get("passed"), reason=str(r.get("reason", "")))
            for v in verdicts for r in v.rules]


def job_reasons(job: Job) -> str | None:
    verdict = next((v for v in job.verdicts if v.scope == JOB_SCOPE), None)
    if verdict is None or not verdict.rules:
        return None
    return str(verdict.rules[0].get("reason") or "")


def _clean(values: list[Any]) -> list[float | None]:
    return [finite(v) for v in values]


def step_traces(result: EvaluationResult) -> list[Trace]:
    """Per-step fidelity (z_H vs the reference at the same ACT step) of every candidate, and the reference's
    consecutive-step similarity (dashed): a candidate that leaves the reference shows where in the recursion."""
    traces = []
    for cand in result.candidates:
        curve = _clean(cand.step_fidelity)
        traces.append({"type": "scatter", "mode": "lines+markers", "name": cand.name, "x": list(range(len(curve))), "y": curve,
                       "hovertemplate": f"{cand.name}<br>step %{{x}}: fidelity %{{y:.5f}}<extra></extra>"})
    consecutive = _clean(result.reference.consecutive_similarity.curve)
    traces.append({"type": "scatter", "mode": "lines", "name": "reference consecutive similarity", "x": list(range(len(consecutive))),
                   "y": consecutive, "line": {"dash": "dash", "color": "#000"},
                   "hovertemplate": "reference<br>step %{x}: cos(z_H[t], z_H[t-1]) %{y:.5f}<extra></extra>"})
    return traces


def histogram_traces(result: EvaluationResult) -> list[Trace]:
    """Per-puzzle fidelity of every candidate that has it, overlaid."""
    traces = []
    for cand in result.candidates:
        values = [v for v in _clean(cand.per_puzzle.get("fidelity") or []) if v is not None]
        if values:
            traces.append({"type": "histogram", "name": cand.name, "x": values, "opacity": 0.6, "nbinsx": 30,
                           "hovertemplate": f"{cand.name}<br>fidelity %{{x}}: %{{y}} puzzles<extra></extra>"})
    return traces


def _label(model: ModelResult, result: EvaluationResult) -> str:
    """A model's name on a bar chart: the reference says so."""
    return f"{model.name} (reference)" if model is result.reference else model.name


def steps_used_traces(result: EvaluationResult) -> list[Trace]:
    """Under adaptive halting: how many ACT steps each model ran per puzzle (grouped bars, step 1..max_steps), the
    reference first. A candidate whose bars sit right of the reference's halts later, and costs more on the device."""
    traces = []
    for model in [result.reference, *result.candidates]:
        histogram = model.adaptive.steps_used.histogram if model.adaptive is not None else []
        if not histogram:
            continue
        name = _label(model, result)
        trace: Trace = {"type": "bar", "name": name, "x": list(range(1, len(histogram) + 1)), "y": [int(v) for v in histogram],
                        "hovertemplate": f"{name}<br>%{{y}} puzzles halted after %{{x}} steps<extra></extra>"}
        if model is result.reference:
            trace["marker"] = {"color": "#000"}
        traces.append(trace)
    return traces


def footprint_traces(result: EvaluationResult) -> list[Trace]:
    """Deployed weights and streaming SRAM peak (MB) of the reference and each candidate, grouped bars."""
    names, weights, sram = [], [], []
    for m in [result.reference, *result.candidates]:
        if m.footprint is None:
            continue
        names.append(_label(m, result))
        weights.append(m.footprint.total_bytes / MB)
        sram.append(m.footprint.sram_streaming_bytes / MB)
    if not names:
        return []
    return [{"type": "bar", "name": "weights MB", "x": names, "y": weights, "hovertemplate": "%{x}: %{y:.3f} MB weights<extra></extra>"},
            {"type": "bar", "name": "SRAM streaming peak MB", "x": names, "y": sram,
             "hovertemplate": "%{x}: %{y:.3f} MB streaming SRAM<extra></extra>"}]


def budget_shapes() -> list[dict[str, Any]]:
    return [{"type": "line", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": mb, "y1": mb, "name": f"{mb} MB budget",
             "line": {"color": "#b00" if mb == 4 else "#e69500", "dash": "dot", "width": 1.5}} for mb in SRAM_BUDGETS_MB]
