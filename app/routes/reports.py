"""A job's release reports: `GET /jobs/{id}/report.md` (CI step summary, PR comment) and `/report.html`
(self-contained, plots inline, for attaching to a release). Rendering: `app/reports.py`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse

from carrygate.app.deps import SessionDep
from carrygate.app.reports import Report, render_html, render_markdown
from carrygate.app.routes.jobs import job_read
from carrygate.app.services import jobs

router = APIRouter(tags=["reports"])


def _report(session: SessionDep, job_id: str, request: Request) -> Report:
    job = jobs.reportable_job(session=session, job_id=job_id)
    # The same JSON `GET /jobs/{id}` returns: the report says exactly what the API says.
    body = job_read(job, request).model_dump(mode="json")
    return Report.from_job(body, job.checkpoint.original_name, str(request.url_for("job_page", job_id=job.id)))


@router.get("/jobs/{job_id}/report.md", response_class=PlainTextResponse,
            responses={200: {"content": {"text/markdown": {}}, "description": "the verdict as GitHub-flavoured Markdown"},
                       404: {"description": "no such job, or no verdict yet"}})
def job_report_markdown(job_id: str, request: Request, session: SessionDep) -> PlainTextResponse:
    """The short Markdown verdict: decision, one row per candidate with its deciding rules, footprint, dashboard link."""
    return PlainTextResponse(render_markdown(_report(session, job_id, request)), media_type="text/markdown; charset=utf-8")


@router.get("/jobs/{job_id}/report.html", response_class=HTMLResponse,
            responses={200: {"content": {"text/html": {}}, "description": "one offline HTML file"},
                       404: {"description": "no such job, or no verdict yet"}})
def job_report_html(job_id: str, request: Request, session: SessionDep, download: bool = False) -> HTMLResponse:
    """A self-contained HTML report (styles, data and plotly.js inline) that opens from disk with no server.
    `?download=true` asks the browser to save it."""
    report = _report(session, job_id, request)
    headers = {"Content-Disposition": f'attachment; filename="carrygate-{job_id[:8]}.html"'} if download else {}
    return HTMLResponse(render_html(report), headers=headers)
