"""Dashboard pages (server-rendered HTML, read-only): overview, job, depth x precision grid, checkpoints, signal validity.

Each page asks `app.dashboard.data` (and `grid`, `history`, `validity`) for its numbers and Plotly
traces, which read the database only through `app.services.dashboard`, and hands them to a Jinja2
template; `app/static/dashboard.js` draws the figures with the Plotly bundle of the installed
`plotly` package (served from here, so the dashboard works offline) and polls the JSON API for a
running job's progress.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import plotly
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from carrygate.app.dashboard import data, grid, history, validity
from carrygate.app.dashboard.artifact import artifact_section
from carrygate.app.dashboard.figures import figure_json, job_figures
from carrygate.app.dashboard.verdicts import verdict_pivot
from carrygate.app.deps import SessionDep, SettingsDep, require_scope
from carrygate.app.services import dashboard as service
from carrygate.models.numbers import fixed
from carrygate.store.tables import FINISHED_STATUSES
from carrygate.workers.queue import now

APP_DIR = Path(__file__).resolve().parent.parent
TEMPLATES = Jinja2Templates(directory=str(APP_DIR / "templates"))
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"

read_access = require_scope("read")
"""The one dependency that guards every dashboard page (a no-op in open mode); browsers sign in through `access.py`."""

router = APIRouter(prefix="/dashboard", tags=["dashboard"], dependencies=[read_access], include_in_schema=False)


def _age(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    seconds = max(0, int((now() - moment).total_seconds()))
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 5400:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


TEMPLATES.env.filters["age"] = _age
TEMPLATES.env.filters["mb"] = lambda b: "—" if b is None else f"{b / data.MB:.3f}"
TEMPLATES.env.filters["size"] = lambda b: "—" if b is None else (f"{b / 1024:.1f} KB" if b < data.MB else f"{b / data.MB:.2f} MB")
TEMPLATES.env.filters["num"] = fixed
TEMPLATES.env.globals["decision_label"] = lambda d: data.DECISION_LABELS.get(d, d)


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A dashboard page: `template` rendered with `context` (every page router renders through this)."""
    return TEMPLATES.TemplateResponse(request, template, context, status_code=status_code)


def error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    """The dashboard's error page (404 "Not found", else "Error") saying `message`."""
    return page(request, "error.html", status_code=status_code, title="Not found" if status_code == 404 else "Error", message=message)


def _parse_day(value: str | None, field_name: str, errors: list[str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.append(f"{field_name}: {value!r} is not a date (YYYY-MM-DD); ignored")
        return None


@router.get("/assets/plotly.min.js")
def plotly_bundle() -> FileResponse:
    """The plotly.js bundle shipped inside the `plotly` Python package (no CDN)."""
    return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})


@router.get("", response_class=HTMLResponse)
def overview(request: Request, session: SessionDep, checkpoint: str | None = None, task: str | None = None,
             since: str | None = None, until: str | None = None) -> HTMLResponse:
    """Fidelity against the puzzle-exact and cell-accuracy drops for every evaluated candidate."""
    errors: list[str] = []
    since_day, until_day = _parse_day(since, "since", errors), _parse_day(until, "until", errors)
    filters = data.Filters(
        checkpoint_id=checkpoint or None, task=task or None,
        since=datetime.combine(since_day, time(), tzinfo=UTC) if since_day else None,
        until=datetime.combine(until_day, time(), tzinfo=UTC) + timedelta(days=1) if until_day else None,
    )
    points, jobs = data.load_points(session, filters)
    policy = data.policy_of(jobs)
    figures = {}
    for key, y, title in (("exact", "puzzle_exact_drop", "puzzle-exact drop"), ("cell", "cell_accuracy_drop", "cell-accuracy drop")):
        traces = data.scatter_traces(points, y)
        layout = {"xaxis": {"title": {"text": "carry-trajectory fidelity (mean)"}},
                  "yaxis": {"title": {"text": f"{title} (reference − candidate)"}, "zeroline": True},
                  "shapes": data.threshold_shapes(policy, y), "margin": {"t": 30, "r": 10}, "hovermode": "closest",
                  "legend": {"title": {"text": "method"}}}
        figures[key] = {"json": figure_json(traces, layout), "points": sum(len(t["x"]) for t in traces)}
    unlabelled = sum(1 for p in points if p.puzzle_exact_drop is None)
    if len(jobs) >= data.OVERVIEW_JOB_LIMIT:
        errors.append(f"showing the newest {data.OVERVIEW_JOB_LIMIT} matching jobs; narrow the dates or pick a checkpoint to see others")
    checkpoints = service.list_checkpoints(session=session)
    tasks = sorted({data.task_of(j.probe_set) for j in data.load_jobs(session, status="succeeded", with_result=False)})
    return page(request, "overview.html", title="Overview", points=points, figures=figures, policy=policy, unlabelled=unlabelled,
                 checkpoints=checkpoints, tasks=tasks, filters={"checkpoint": checkpoint or "", "task": task or "", "since": since or "",
                                                                "until": until or ""},
                 errors=errors, recent=data.recent_jobs(session), job_decision=data.job_decision)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str, request: Request, session: SessionDep) -> HTMLResponse:
    """A job's status and live progress; once finished its verdicts, per-step curves, histogram, footprint and, for
    onnxruntime candidates, the deployable artifact (file, local ORT profile, per-op times, AI Hub devices)."""
    job = service.job_with_verdicts(session=session, job_id=job_id)
    if job is None:
        return error_page(request, 404, f"There is no job {job_id}.")
    result = service.stored_result(job)
    figures = job_figures(result) if result is not None else {}
    rules = data.verdict_rows(job)
    artifact = artifact_section(result, rules) if result is not None else None
    if artifact is not None and artifact.op_traces:
        figures["ops"] = figure_json(artifact.op_traces, {
            "barmode": "group", "xaxis": {"title": {"text": "kernel µs per ACT step"}},
            "yaxis": {"type": "category", "categoryorder": "array", "categoryarray": artifact.op_order, "autorange": "reversed",
                      "automargin": True},
            "margin": {"t": 30, "r": 10}, "legend": {"orientation": "h", "y": -0.25}})
    stale = (job.status == "running" and job.lease_expires_at is not None and job.lease_expires_at < now())
    return page(request, "job.html", title=f"Job {job.id[:8]}", job=job, body=result, figures=figures, verdicts=verdict_pivot(rules),
                 artifact=artifact,
                 decision=data.job_decision(job), reasons=data.job_reasons(job), finished=job.status in FINISHED_STATUSES,
                 task=data.task_of(job.probe_set), stale=stale)


@router.get("/grid", response_class=HTMLResponse)
def grid_page(request: Request, session: SessionDep, checkpoint: str | None = None) -> HTMLResponse:
    """Depth x precision heatmaps of fidelity and puzzle-exact, with GFLOPs per puzzle and the cheapest passing cell."""
    candidates = grid.grid_checkpoints(session)
    if checkpoint and service.find_checkpoint(session=session, checkpoint_id=checkpoint) is None:
        return error_page(request, 404, f"There is no checkpoint {checkpoint}.")
    selected = checkpoint or (candidates[0][0].id if candidates else None)
    view = grid.grid_view(session, selected) if selected else None
    figures: dict[str, Markup] = {}
    if view is not None and view.cells:
        for key, attribute, title in (("fidelity", "fidelity", "fidelity"), ("exact", "puzzle_exact", "puzzle-exact")):
            figures[key] = figure_json(grid.heatmap_traces(view, attribute, title), {
                "xaxis": {"title": {"text": "precision"}, "type": "category"}, "yaxis": {"title": {"text": "H_cycles"}, "type": "category"},
                "margin": {"t": 30, "r": 10}, "showlegend": False, "shapes": grid.cheapest_shapes(view)})
    return page(request, "grid.html", title="Depth × precision", view=view, figures=figures, checkpoints=candidates, selected=selected,
                 selected_checkpoint=service.find_checkpoint(session=session, checkpoint_id=selected) if selected else None)


@router.get("/checkpoints", response_class=HTMLResponse)
def checkpoints_page(request: Request, session: SessionDep, family: str | None = None) -> HTMLResponse:
    """Checkpoints with their latest verdicts, and one family's fidelity per spec across its versions."""
    rows = history.checkpoint_rows(session)
    families = history.families(session)
    selected = family or (families[0][0] if families else None)
    traces, versions = history.history_traces(session, selected) if selected else ([], [])
    history_figure = figure_json(traces, {"xaxis": {"title": {"text": "checkpoint version (registration order)"}, "type": "category"},
                                  "yaxis": {"title": {"text": "fidelity (mean)"}}, "margin": {"t": 30, "r": 10},
                                  "legend": {"orientation": "h", "y": -0.3}}) if traces else None
    return page(request, "checkpoints.html", title="Checkpoints", rows=rows, families=families, selected=selected,
                 history_figure=history_figure, versions=versions, lines=len(traces))


@router.get("/validity", response_class=HTMLResponse)
def validity_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    """Signal validity (carrygate validate --json files): the first model found under CARRYGATE_VALIDITY_DIR."""
    return _validity(request, settings.validity_dir, None)


@router.get("/validity/{model}", response_class=HTMLResponse)
def validity_model_page(model: str, request: Request, settings: SettingsDep) -> HTMLResponse:
    """One signal scatter per signal against Δ puzzle-exact, its correlations beside it; gate agreement and predicted-drop coverage."""
    return _validity(request, settings.validity_dir, model)


def _validity(request: Request, configured: Path | None, model: str | None) -> HTMLResponse:
    folder = validity.validity_dir(configured)
    files = validity.validity_files(folder)
    if model is not None and model not in files:
        return error_page(request, 404, f"There is no validity file for {model}.")
    selected = model or next(iter(files), None)
    view, problem, figures = None, None, {}
    if selected is not None:
        try:
            view = validity.validity_view(selected, validity.load_document(files[selected]))
        except (OSError, ValueError) as exc:
            problem = f"{files[selected].name}: {exc}"
        else:
            figures = {p.signal: figure_json(p.traces, validity.scatter_layout(p)) for p in view.panels}
    return page(request, "validity.html", title="Signal validity", folder=folder, files=files, selected=selected, view=view,
                 figures=figures, problem=problem, near=validity.NEAR_BASELINE, damage=validity.DAMAGE)
