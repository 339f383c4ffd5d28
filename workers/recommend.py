"""Run one claimed recommendation (a jobs row of kind "recommend"): load, search, judge, store.

The search is `models.recommend.recommend`; this module only feeds it the job's checkpoint, probe, budget
and tolerance, reports its stages as progress, and stores what it found. Everything around it is the
evaluation pipeline's (`workers/pipeline.py`): the same checks on every path and the checkpoint's finite
tensors, the same lease heartbeat, the same outbox commit. Cancellation, lease loss and the deadline are
polled after every round of candidate evaluations (the search's progress callback), so a stopped search
frees its worker within one round plus one heartbeat.

NaN/Inf: a reference with non-finite tensors fails the job (`load_checkpoint(require_finite=True)`); a
candidate that turns non-finite is a failed point the search never chooses; a non-finite number anywhere in
the stored result fails the job naming where (PostgreSQL's JSON types would refuse it).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from carrygate.gate import GatePolicy, JobVerdict, judge
from carrygate.models.budget import describe_recommend_cost, recommend_cost
from carrygate.models.compress import CompressionSpec
from carrygate.models.recommend import Budget, Recommendation, Tolerance, recommend
from carrygate.models.results import EvaluationResult
from carrygate.store.tables import Job, Result
from carrygate.workers.calibrations import active_calibration
from carrygate.workers.context import Deadline, Heartbeat, JobFailed, WorkerContext
from carrygate.workers.pipeline import enqueue_events, finish_job, load_job, load_model_and_probe, store_success
from carrygate.workers.queue import JobOutcome

__all__ = ["STAGE_FRACTIONS", "run_recommendation"]

STAGE_FRACTIONS = {"setup": 0.02, "sensitivity": 0.2, "baselines": 0.25, "bisect": 0.5, "greedy": 0.65, "depth": 0.72, "prune": 0.76,
                   "precision": 0.8, "confirm": 0.95}
"""Progress once a search stage has run a round of evaluations (the search's own order; confirm runs last)."""


class _Stopped(Exception):
    """Raised from the progress callback to leave the search: cancelled, lease lost, or past the deadline."""


def non_finite_at(value: Any, where: str = "") -> str | None:
    """The path of the first non-finite float in a JSON-like value, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where or "."
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = non_finite_at(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def run_recommendation(job_id: str, ctx: WorkerContext) -> JobOutcome:
    """Run a claimed recommendation to its end; returns the final status (or `lost`/`duplicate`)."""
    deadline = Deadline(ctx.limits.max_seconds)
    inputs = load_job(ctx, job_id)
    beat = Heartbeat(ctx, job_id)
    beat.fraction, beat.stage = 0.0, "loading the checkpoint and the probe"
    beat.start()

    def stopped() -> bool:
        return beat.cancelled.is_set() or beat.lost.is_set() or deadline.passed()

    def progress(stage: str, evaluations: int) -> None:
        beat.fraction = max(beat.fraction or 0.0, STAGE_FRACTIONS.get(stage, beat.fraction or 0.0))
        beat.stage = f"{stage} ({evaluations} evaluations)"
        if stopped():
            raise _Stopped

    try:
        try:
            with tempfile.TemporaryDirectory(dir=ctx.cache_dir) as workdir:
                ckpt, probe = load_model_and_probe(inputs, ctx, Path(workdir))
                options = inputs.options
                search_puzzles = int(options.get("search_puzzles", 128))
                try:
                    budget = Budget.model_validate(options.get("budget") or {})
                    tolerance = Tolerance.model_validate(options.get("tolerance") or {"max_predicted_drop": 0.02})
                except ValueError as err:
                    raise JobFailed(f"options: {err}") from err
                if ctx.limits.max_gflop is not None:
                    cost = recommend_cost(ckpt.config, search_puzzles, len(probe))
                    if cost.gflop > ctx.limits.max_gflop:
                        raise JobFailed(f"compute budget: {describe_recommend_cost(cost, search_puzzles, ctx.limits.max_gflop)}")
                judged: dict[str, JobVerdict] = {}

                def verdict_of(result: EvaluationResult) -> str:
                    verdict = judge(result, inputs.policy)
                    judged[result.candidates[0].name] = verdict
                    return verdict.decision

                beat.stage = "setup: the reference trajectory"
                try:
                    rec = recommend(ckpt.model, probe, budget, tolerance, search_puzzles=search_puzzles, batch_size=inputs.batch_size,
                                    calibration=active_calibration(ctx.session_factory), on_progress=progress,
                                    checkpoint=inputs.checkpoint.original_name, verdict_of=verdict_of,
                                    require_go=bool(options.get("require_go", False)),
                                    with_ort=None if options.get("onnxruntime", True) else False)
                except ValueError as err:  # a model the search cannot compress (no module groups, a spec that does not fit)
                    raise JobFailed(f"search: {err}") from err
        except _Stopped:
            rec = None
        beat.beat()  # last progress, and a final look at the cancel flag
        if beat.lost.is_set():
            return "lost"
        if beat.cancelled.is_set():
            return finish_job(ctx, job_id, "cancelled", "cancelled by request")
        if deadline.passed() or rec is None:
            raise JobFailed(deadline.reason())
        return _store(ctx, job_id, rec, judged, inputs.policy)
    except JobFailed as err:
        return finish_job(ctx, job_id, "failed", str(err))
    finally:
        beat.stop()


def result_body(rec: Recommendation, judged: dict[str, JobVerdict], policy: GatePolicy) -> dict[str, Any]:
    """The stored result: the whole `Recommendation`, the chosen spec as YAML, and its verdict with every rule."""
    spec_yaml, verdict = None, None
    if rec.chosen is not None:
        spec_yaml = CompressionSpec.model_validate(rec.chosen.spec).to_yaml()
        chosen = judged.get(rec.chosen.name)
        if chosen is not None and chosen.candidates:
            verdict = {"decision": chosen.decision, "rules": [r.model_dump(mode="json") for r in chosen.candidates[0].rules],
                       "policy": policy.model_dump(mode="json")}
    return {"recommendation": rec.model_dump(mode="json"), "spec_yaml": spec_yaml, "verdict": verdict}


def _summary(rec: Recommendation, body: dict[str, Any]) -> dict[str, Any]:
    """What `recommendation.ready` carries: the chosen spec (name, YAML, cost) and its verdict, not the whole search."""
    chosen = rec.chosen
    cost = chosen.cost if chosen else None
    return {"chosen": chosen.name if chosen else None, "spec_yaml": body["spec_yaml"], "weight_bytes": cost.weight_bytes if cost else None,
            "weight_fraction": cost.weight_fraction if cost else None, "verdict": rec.verdict, "evaluations": rec.evaluations,
            "notes": rec.notes}


def _store(ctx: WorkerContext, job_id: str, rec: Recommendation, judged: dict[str, JobVerdict], policy: GatePolicy) -> JobOutcome:
    """Result, status and the `recommendation.ready` events in one transaction, only while this worker owns the job."""
    body = result_body(rec, judged, policy)
    where = non_finite_at(body)
    if where is not None:
        return finish_job(ctx, job_id, "failed", f"the recommendation holds a non-finite number at {where}")
    verdict = body["verdict"]

    def write(session: Session) -> None:
        session.execute(update(Job).where(Job.id == job_id).values(stage=f"done ({rec.evaluations} evaluations)")
                        .execution_options(synchronize_session=False))
        session.add(Result(job_id=job_id, body=body))
        enqueue_events(session, job_id, "succeeded", decision=verdict["decision"] if verdict else None,
                       reasons=[r["reason"] for r in verdict["rules"] if r.get("passed") is False] if verdict else [],
                       recommendation=_summary(rec, body))

    return store_success(ctx, job_id, write)
