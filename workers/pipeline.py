"""Run one job: load the reference, build the probe set, evaluate every candidate, gate, store.

The same function runs in the embedded worker process and (later) in a Celery task. It takes ids and
factories, never ORM objects from another session. Failures that re-running cannot fix (a corrupt or
hostile checkpoint, a spec that does not fit the architecture, an unreadable probe set) fail the job
with the loader's or validator's message; everything else propagates to the executor.

Exactly one result and one verdict set per job: the `results.job_id` and `verdicts (job_id, scope)`
unique constraints hold even if a worker that lost its lease writes late; such a worker's commit is
rolled back and the job's owner wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models.checkpoint import CheckpointError, load_checkpoint, resolve_weights
from models.compress import CompressionSpec
from models.evaluate import Probe, evaluate
from models.results import EvaluationResult
from models.tasks.dataset import read_split
from workers.artifacts import ArtifactStore, sha256_file
from workers.gate import GatePolicy, judge
from workers.orm import Candidate, Checkpoint, Job, ProbeSet, Result, Verdict
from workers.queue import finish, heartbeat

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """A deterministic failure: the job is marked failed with this message and not retried."""


@dataclass(frozen=True)
class WorkerContext:
    session_factory: sessionmaker[Session]
    store: ArtifactStore
    worker_id: str
    lease_seconds: float
    heartbeat_seconds: float
    cache_dir: Path


# -- inputs ----------------------------------------------------------------------------------------
def _check_unchanged(path: Path, sha256: str) -> None:
    """A registered file is read where it lies: make sure it is still the file that was registered."""
    try:
        weights = resolve_weights(path)[1]
        actual = sha256_file(weights)
    except (CheckpointError, OSError) as err:
        raise JobFailed(f"checkpoint: {path} is no longer readable: {err}") from err
    if actual != sha256:
        raise JobFailed(f"checkpoint: {weights} changed since it was registered (sha256 {actual[:12]}, "
                        f"registered {sha256[:12]}); register it again")


def materialize_checkpoint(row: Checkpoint, store: ArtifactStore, workdir: Path) -> Path:
    """A local path `load_checkpoint` can read: the registered path, or an uploaded file laid out
    with its config file beside it under the name the loader expects."""
    if row.source == "registered":
        path = Path(row.storage_path)
        _check_unchanged(path, row.sha256)
        return path
    weights = store.local_path(row.storage_path)
    meta = row.config or {}
    folder = workdir / row.id
    folder.mkdir(parents=True, exist_ok=True)
    if meta.get("format") == "carrygate":
        (folder / "model.safetensors").unlink(missing_ok=True)
        os.symlink(weights, folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps(meta["config_json"]))
    else:
        name = "checkpoint" if meta.get("weights_name") == "checkpoint" else "step_0"
        (folder / name).unlink(missing_ok=True)
        os.symlink(weights, folder / name)
        if meta.get("all_config_yaml") is not None:
            (folder / "all_config.yaml").write_text(meta["all_config_yaml"])
        if meta.get("dataset_json") is not None:
            (folder / "dataset.json").write_text(json.dumps(meta["dataset_json"]))
    return folder


def probe_folder(probe: ProbeSet, checkpoint_path: Path, cache_dir: Path, seq_len: int) -> tuple[Path, str]:
    """-> (official dataset folder, split) for the job's probe set; builder output is cached by hash."""
    if probe.builder is None:
        if probe.dataset_path:
            return Path(probe.dataset_path), str(probe.builder_args.get("split", "test"))
        shipped = (checkpoint_path if checkpoint_path.is_dir() else checkpoint_path.parent) / "data"
        if not (shipped / "test" / "dataset.json").is_file():
            raise JobFailed(f"probe: no dataset_path given and the checkpoint ships no data/ folder ({shipped})")
        return shipped, "test"
    folder = cache_dir / "probes" / f"{probe.content_hash[:32]}-{seq_len}"  # builders size puzzles from seq_len
    if (folder / "test" / "dataset.json").is_file():
        return folder, "test"
    args = dict(probe.builder_args)
    size, seed = int(args.pop("size", 64)), int(args.pop("seed", 1234))
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix="probe-"))
    if probe.builder == "sudoku":
        from models.tasks.sudoku import build_sudoku

        build_sudoku(tmp, givens=int(args.get("givens", 30)), train_puzzles=0, num_aug=0, test_puzzles=size, seed=seed)
    elif probe.builder == "maze":
        import math

        from models.tasks.maze import build_maze

        build_maze(tmp, size=int(args.get("size_side", math.isqrt(seq_len))), train_mazes=0, test_mazes=size,
                   loops=float(args.get("loops", 0.1)), seed=seed)
    elif probe.builder == "arc":
        from models.tasks.arc import build_arc

        build_arc(tmp, version=args.get("version", "arc1"), num_aug=0, seed=seed, limit_tasks=size)
    else:
        raise JobFailed(f"probe: unknown builder {probe.builder!r}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(folder)
    except OSError:  # another worker built the same probe set first
        pass
    return folder, "test"


def probe_hash(builder: str | None, args: dict[str, Any], dataset_path: str | None) -> str:
    body = json.dumps({"builder": builder, "args": args, "dataset_path": dataset_path}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


# -- the run ---------------------------------------------------------------------------------------
class _Heartbeat(threading.Thread):
    """Renews the lease, writes progress, and watches for cancellation, off the model thread."""

    def __init__(self, ctx: WorkerContext, job_id: str) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id[:8]}")
        self.ctx, self.job_id = ctx, job_id
        self.progress: tuple[int, int] | None = None
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._stop_event = threading.Event()

    def beat(self) -> None:
        with self.ctx.session_factory() as session:
            beat = heartbeat(session, self.job_id, self.ctx.worker_id, self.ctx.lease_seconds, self.progress)
        if beat.cancel_requested:
            self.cancelled.set()
        if not beat.still_owner:
            self.lost.set()

    def run(self) -> None:
        while not self._stop_event.wait(self.ctx.heartbeat_seconds):
            try:
                self.beat()
            except Exception:  # a transient DB error must not kill the job; the lease is long
                log.exception("heartbeat failed for job %s", self.job_id)

    def stop(self) -> None:
        self._stop_event.set()


@dataclass
class JobInputs:
    """What a job's rows say to run, detached from their session."""

    checkpoint: Checkpoint
    probe_row: ProbeSet
    candidates: list[tuple[str, str, CompressionSpec]]  # (candidate id, name, spec)
    policy: GatePolicy
    options: dict[str, Any]

    @property
    def batch_size(self) -> int:
        return int(self.options.get("batch_size", 64))


def load_job(ctx: WorkerContext, job_id: str) -> JobInputs:
    with ctx.session_factory() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobFailed(f"job {job_id} vanished")
        inputs = JobInputs(job.checkpoint, job.probe_set,
                           [(c.id, c.name, CompressionSpec.model_validate(c.spec | {"name": c.name})) for c in job.candidates],
                           GatePolicy.model_validate(job.policy or {}), dict(job.options or {}))
        session.expunge_all()
    return inputs


def load_model_and_probe(inputs: JobInputs, ctx: WorkerContext, workdir: Path) -> tuple[Any, Probe]:
    """-> (the loaded checkpoint, the probe puzzles); unreadable or mismatched inputs raise JobFailed."""
    try:
        path = materialize_checkpoint(inputs.checkpoint, ctx.store, workdir)
        ckpt = load_checkpoint(path)
        folder, split = probe_folder(inputs.probe_row, path, ctx.cache_dir, ckpt.config.seq_len)
        data = read_split(folder, split)
        if data.metadata.seq_len != ckpt.config.seq_len:
            raise JobFailed(f"probe: puzzles have seq_len {data.metadata.seq_len}, the checkpoint {ckpt.config.seq_len}")
        return ckpt, Probe.from_split(data, inputs.options.get("limit"), bool(inputs.options.get("labels", True)))
    except (CheckpointError, ValueError, OSError) as err:
        raise JobFailed(str(err)) from err


def attach_artifacts(ctx: WorkerContext, result: EvaluationResult, reference: Any, probe: Probe, options: dict[str, Any],
                     workdir: Path) -> None:
    """Keep the ORT files in the store and, when asked, profile them on AI Hub devices."""
    store_artifacts(ctx.store, result, workdir / "artifacts")
    if options.get("aihub"):
        from workers.profile.aihub import AiHubOptions, attach_device_profiles

        attach_device_profiles(result, reference, probe.inputs, probe.puzzle_identifiers, workdir / "artifacts",
                               AiHubOptions.model_validate(options["aihub"]))


def run_job(job_id: str, ctx: WorkerContext, *, on_progress: Callable[[int, int], None] | None = None) -> str:
    """Run a claimed job to its end; returns the final status."""
    inputs = load_job(ctx, job_id)
    beat = _Heartbeat(ctx, job_id)
    beat.start()
    try:
        with tempfile.TemporaryDirectory(dir=ctx.cache_dir) as workdir:
            ckpt, probe = load_model_and_probe(inputs, ctx, Path(workdir))
            total, done = len(probe), 0

            def progress(k: int) -> None:
                nonlocal done
                done += k
                beat.progress = (done, total)
                if on_progress is not None:
                    on_progress(done, total)

            beat.progress = (0, total)
            try:
                result = evaluate(ckpt.model, [spec for _, _, spec in inputs.candidates], probe, batch_size=inputs.batch_size,
                                  on_progress=progress, should_stop=lambda: beat.cancelled.is_set() or beat.lost.is_set(),
                                  artifact_dir=Path(workdir) / "artifacts")
            except ValueError as err:  # a spec that does not fit the architecture
                raise JobFailed(str(err)) from err
            attach_artifacts(ctx, result, ckpt.model, probe, inputs.options, Path(workdir))
        beat.beat()  # last progress, and a final look at the cancel flag
        if beat.lost.is_set():
            return "lost"
        if beat.cancelled.is_set():
            return _finish(ctx, job_id, "cancelled", "cancelled by request")
        return judge_and_store(ctx, job_id, result, inputs)
    except JobFailed as err:
        return _finish(ctx, job_id, "failed", str(err))
    finally:
        beat.stop()


def judge_and_store(ctx: WorkerContext, job_id: str, result: EvaluationResult, inputs: JobInputs) -> str:
    return _store(ctx, job_id, result.model_dump(mode="json"), judge(result, inputs.policy), inputs.candidates)


def store_artifacts(store: ArtifactStore, result: EvaluationResult, folder: Path) -> None:
    """Keep every onnxruntime candidate's measured .onnx file in the artifact store (content-addressed)
    and record its key in the result, so `GET /jobs/{id}/artifacts/{name}` can serve it."""
    for candidate in result.candidates:
        if candidate.artifact is not None and (folder / candidate.artifact.filename).is_file():
            candidate.artifact.store_key = store.put_file(folder / candidate.artifact.filename).path


def fail_crashed(ctx: WorkerContext, job_id: str, err: BaseException) -> str:
    """An unexpected exception: the job fails with its type and message (the traceback is logged)."""
    return _finish(ctx, job_id, "failed", f"internal error: {type(err).__name__}: {str(err)[:500]}")


def _finish(ctx: WorkerContext, job_id: str, status: str, error: str | None) -> str:
    with ctx.session_factory() as session:
        if finish(session, job_id, ctx.worker_id, status, error) and status == "failed":
            enqueue_events(session, job_id, status, error=error)
        session.commit()
    return status


def enqueue_events(session: Session, job_id: str, status: str, **details: Any) -> int:
    """Webhook events of the finished job, in the caller's transaction (the outbox: no verdict without its events)."""
    from sqlalchemy import select

    from workers.webhooks import enqueue_job_events

    checkpoint_id, tags = session.execute(select(Job.checkpoint_id, Job.tags).where(Job.id == job_id)).one()
    return enqueue_job_events(session, job_id=job_id, checkpoint_id=checkpoint_id, tags=tags or [], status=status, **details)


def _store(ctx: WorkerContext, job_id: str, body: dict[str, Any], verdict: Any, candidates: list[tuple[str, str, Any]]) -> str:
    """Result, verdicts and status in one transaction, only while this worker owns the job."""
    by_name = {name: cid for cid, name, _ in candidates}
    policy = verdict.policy.model_dump(mode="json")
    with ctx.session_factory() as session:
        try:
            if not finish(session, job_id, ctx.worker_id, "succeeded"):
                session.rollback()
                return "lost"
            session.add(Result(job_id=job_id, body=body))
            session.add(Verdict(job_id=job_id, candidate_id=None, decision=verdict.decision,
                                rules=[{"rule": "job", "observed": None, "threshold": None, "passed": verdict.decision == "go",
                                        "reason": "; ".join(verdict.reasons)}], policy=policy))
            for cv in verdict.candidates:
                session.add(Verdict(job_id=job_id, candidate_id=by_name[cv.candidate], decision=cv.decision,
                                    rules=[r.model_dump(mode="json") for r in cv.rules], policy=policy))
            enqueue_events(session, job_id, "succeeded", decision=verdict.decision, reasons=verdict.reasons, result=body)
            session.commit()
        except IntegrityError:  # an earlier run already stored this job's result: the job is done
            session.rollback()
            with ctx.session_factory() as again:
                finish(again, job_id, ctx.worker_id, "succeeded")
                again.commit()
            return "duplicate"
    return "succeeded"


def candidate_rows(specs: list[CompressionSpec]) -> list[Candidate]:
    """ORM rows for a job's candidates, with unique display names in submission order."""
    from models.evaluate import candidate_name

    taken: set[str] = set()
    return [Candidate(position=i, name=candidate_name(spec, taken), spec=spec.to_dict(), spec_hash=spec.content_hash)
            for i, spec in enumerate(specs)]
