"""Jobs: submit (idempotent), list, read with progress / result / verdict, cancel; verdicts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import FileResponse
from starlette.datastructures import URLPath

from carrygate.app.deps import SessionDep, SettingsDep, StoreDep
from carrygate.app.schemas import JobCreate, JobList, JobRead, VerdictList, VerdictRead
from carrygate.app.services import jobs
from carrygate.store.tables import JOB_SCOPE, Job, Verdict
from carrygate.store.vocabulary import JobStatus

router = APIRouter(tags=["jobs"])


def _verdict_read(v: Verdict) -> VerdictRead:
    return VerdictRead(job_id=v.job_id, scope=v.scope, candidate=v.candidate.name if v.candidate else None, decision=v.decision,
                       rules=v.rules, created_at=v.created_at)


def job_url(request: Request, job_id: str) -> str:
    """`request.url_for("get_job", job_id=...)`, without searching the app's routes on every call: the path
    template is looked up once per app."""
    state = request.app.state
    template = getattr(state, "job_path_template", None)
    if template is None:
        template = state.job_path_template = request.app.url_path_for("get_job", job_id="{job_id}")
    return str(URLPath(template.replace("{job_id}", job_id)).make_absolute_url(request.base_url))


def job_read(job: Job, request: Request, with_result: bool = True, url: str | None = None) -> JobRead:
    verdicts = jobs.ordered_verdicts(job)
    job_verdict = next((v for v in verdicts if v.scope == JOB_SCOPE), None)
    return JobRead(
        id=job.id, url=url or job_url(request, job.id), status=job.status, progress=job.progress,
        puzzles_done=job.puzzles_done, puzzles_total=job.puzzles_total, attempts=job.attempts, error=job.error,
        checkpoint_id=job.checkpoint_id, task=job.probe_set.task if job.probe_set else None, candidates=job.candidates,
        policy=job.policy, options=job.options, tags=job.tags,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        verdict=_verdict_read(job_verdict) if job_verdict else None,
        candidate_verdicts=[_verdict_read(v) for v in verdicts if v.scope != JOB_SCOPE],
        result=job.result.body if (with_result and job.result is not None) else None,
    )


@router.post("/jobs", status_code=status.HTTP_202_ACCEPTED, response_model=JobRead,
             responses={200: {"description": "a job with this Idempotency-Key exists"}, 404: {"description": "unknown checkpoint"},
                        422: {"description": "malformed request, a spec that does not fit the architecture, a path outside "
                                              "the register roots, or a job over the compute budget (CARRYGATE_MAX_JOB_GFLOP)"}})
def create_job(
    body: JobCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Queue an evaluation. Returns 202 with the job's URL in `Location`."""
    submitted = jobs.create_job(session=session, body=body, settings=settings, idempotency_key=idempotency_key,
                                cache=request.app.state.submissions)
    url = job_url(request, submitted.job.id)
    # Serialised here, by the model that built it, rather than validated again against `response_model`.
    return Response(job_read(submitted.job, request, url=url).model_dump_json(), media_type="application/json",
                    status_code=status.HTTP_202_ACCEPTED if submitted.created else status.HTTP_200_OK, headers={"Location": url})


@router.get("/jobs", response_model=JobList)
def list_jobs(request: Request, session: SessionDep, status: JobStatus | None = None, checkpoint_id: str | None = None,
              tag: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50,
              offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> JobList:
    """Newest first; results are left out of listings (read one job for its result)."""
    page = jobs.list_jobs(session=session, status=status, checkpoint_id=checkpoint_id, tag=tag, limit=limit, offset=offset)
    return JobList(data=[job_read(j, request, with_result=False) for j in page.rows], count=page.count)


@router.get("/jobs/{job_id}", response_model=JobRead, responses={404: {"description": "no such job"}})
def get_job(job_id: str, request: Request, session: SessionDep) -> JobRead:
    return job_read(jobs.get_job(session=session, job_id=job_id), request)


@router.post("/jobs/{job_id}/cancel", response_model=JobRead, responses={404: {}, 409: {"description": "already finished"}})
def cancel_job(job_id: str, request: Request, session: SessionDep) -> JobRead:
    """A queued job is cancelled at once; a running one stops before its next ACT step, within one heartbeat
    (CARRYGATE_HEARTBEAT_SECONDS), and its worker takes the next job."""
    return job_read(jobs.cancel_job(session=session, job_id=job_id), request)


@router.get("/jobs/{job_id}/verdict", response_model=VerdictList, responses={404: {"description": "no job, or no verdict yet"}})
def job_verdict(job_id: str, session: SessionDep) -> VerdictList:
    """The job-level verdict first, then one per candidate, each with every rule."""
    verdicts = jobs.job_verdicts(session=session, job_id=job_id)
    return VerdictList(data=[_verdict_read(v) for v in verdicts], count=len(verdicts))


@router.get("/verdicts", response_model=VerdictList)
def list_verdicts(session: SessionDep, decision: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                  offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> VerdictList:
    """Job-level verdicts, newest first."""
    page = jobs.list_verdicts(session=session, decision=decision, limit=limit, offset=offset)
    return VerdictList(data=[_verdict_read(v) for v in page.rows], count=page.count)


@router.get("/jobs/{job_id}/artifacts/{candidate}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "the candidate's .onnx file"},
                       404: {"description": "no such job or candidate, no result yet, or the candidate has no artifact"}})
def job_artifact(job_id: str, candidate: str, session: SessionDep, store: StoreDep) -> FileResponse:
    """The .onnx file an `onnxruntime` candidate was measured as: exactly the bytes whose fidelity and
    profile the result reports (`sha256` in the `X-Content-SHA256` header and in the result)."""
    stored = jobs.candidate_artifact(session=session, store=store, job_id=job_id, candidate=candidate)
    return FileResponse(stored.path, media_type="application/octet-stream", filename=stored.filename,
                        headers={"X-Content-SHA256": stored.sha256})

