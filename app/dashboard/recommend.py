"""Recommendation pages: a `POST /recommendations` job's stored result, or a `results/recommend-*.json` file
(bench/recommend_zoo.py, `carrygate recommend --json`), shown as the front (SVG from models/recommend/plot.py),
the sensitivity heatmap and the chosen point.

Only files found in the folder listing are read, so a name from a URL never becomes a path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup
from sqlalchemy.orm import Session

from carrygate.app.dashboard.routes import error_page, page, read_access
from carrygate.app.dashboard.validity import REPO_RESULTS
from carrygate.app.deps import SessionDep
from carrygate.app.services import dashboard as service
from carrygate.models.recommend.plot import front_svg
from carrygate.models.recommend.results import Recommendation
from carrygate.store.tables import Job

PREFIX = "recommend-"
JOB_LIST_LIMIT = 50
router = APIRouter(prefix="/dashboard", tags=["dashboard"], dependencies=[read_access], include_in_schema=False)


def recommend_files(folder: Path) -> dict[str, Path]:
    return {p.stem.removeprefix(PREFIX): p for p in sorted(folder.glob(f"{PREFIX}*.json"))} if folder.is_dir() else {}


def load(path: Path) -> tuple[Recommendation, dict[str, Any]]:
    """The recommendation and the bench's side-by-side context (empty for a plain `--json` file)."""
    return parse(json.loads(path.read_text()))


def parse(body: dict[str, Any]) -> tuple[Recommendation, dict[str, Any]]:
    """A bench file, a `--json` file or a job's stored result (`{"recommendation", "spec_yaml", "verdict"}`)."""
    inner = body.get("recommendation", body)
    return Recommendation.model_validate(inner), {k: v for k, v in body.items() if k != "recommendation"}


def heat(fidelity: float | None) -> str:
    """Cell colour: white at fidelity 1, red by 1 - fidelity (saturating at 0.2)."""
    if fidelity is None:
        return "#ddd"
    damage = min(1.0, max(0.0, (1.0 - fidelity) / 0.2))
    g = int(255 * (1 - damage))
    return f"rgb(255,{g},{g})"


def heatmap(rec: Recommendation) -> dict[str, Any]:
    widths = sorted({c.bits for c in rec.sensitivity.cells if c.axis != "step" and c.bits is not None})
    rows: dict[str, dict[int, Any]] = {}
    for c in rec.sensitivity.cells:
        if c.axis != "step" and c.bits is not None:
            rows.setdefault(c.row, {})[c.bits] = c.damage
    steps = [c for c in rec.sensitivity.cells if c.axis == "step"]
    return {"widths": widths, "rows": rows, "steps": steps}


@router.get("/recommendations", response_class=HTMLResponse)
def recommendations_page(request: Request, session: SessionDep) -> HTMLResponse:
    """The first recommendation file found under results/, and the list of recommendation jobs."""
    return _recommend(request, session, None)


@router.get("/recommendations/{model}", response_class=HTMLResponse)
def recommendation_page(model: str, request: Request, session: SessionDep) -> HTMLResponse:
    """Front, sensitivity heatmap (group x width, and from-step s) and the chosen spec of one model."""
    return _recommend(request, session, model)


@router.get("/recommendations/jobs/{job_id}", response_class=HTMLResponse)
def recommendation_job_page(job_id: str, request: Request, session: SessionDep) -> HTMLResponse:
    """One `POST /recommendations` job: its stage and progress while it runs, then its stored front, map and choice."""
    job = service.recommendation_job(session=session, job_id=job_id)
    if job is None:
        return error_page(request, 404, f"There is no recommendation job {job_id}.")
    rec, context, problem = None, {}, None
    if job.result is not None:
        try:
            rec, context = parse(job.result.body)
        except ValueError as exc:
            problem = f"job {job.id}'s stored result: {exc}"
    return _render(request, session, selected=None, job=job, rec=rec, context=context, problem=problem)


def _recommend(request: Request, session: Session, model: str | None) -> HTMLResponse:
    files = recommend_files(REPO_RESULTS)
    if model is not None and model not in files:
        return error_page(request, 404, f"There is no recommendation file for {model}.")
    selected = model or next(iter(files), None)
    rec, context, problem = None, {}, None
    if selected is not None:
        try:
            rec, context = load(files[selected])
        except (OSError, ValueError) as exc:
            problem = f"{files[selected].name}: {exc}"
    return _render(request, session, selected=selected, job=None, rec=rec, context=context, problem=problem)


def _render(request: Request, session: Session, *, selected: str | None, job: Job | None, rec: Recommendation | None,
            context: dict[str, Any], problem: str | None) -> HTMLResponse:
    jobs = service.load_jobs(session=session, kind="recommend", with_result=False, limit=JOB_LIST_LIMIT)
    return page(request, "recommend.html", title="Recommendations", files=recommend_files(REPO_RESULTS), jobs=jobs, job=job,
                 selected=selected, rec=rec, context=context, problem=problem,
                 svg=Markup(front_svg(rec)) if rec else None, heat=heatmap(rec) if rec else None, colour=heat)
