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
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from carrygate.gate import GatePolicy, judge
from carrygate.models.budget import job_cost
from carrygate.models.checkpoint import OWN_CONFIG, WEIGHTS_LIMIT, CheckpointError, load_checkpoint, resolve_weights
from carrygate.models.compress import CompressionSpec
from carrygate.models.evaluate import Probe, evaluate
from carrygate.models.files import SMALL_FILE_LIMIT, UnsafeFile, check_regular, confine, sha256_regular
from carrygate.models.results import EvaluationResult
from carrygate.models.tasks.dataset import read_split, shipped_data
from carrygate.models.tasks.probes import BUILDERS, build_probe
from carrygate.store.tables import Candidate, Checkpoint, Job, ProbeSet, Result, Verdict
from carrygate.store.vocabulary import FinishedStatus
from carrygate.workers.artifacts import ArtifactStore
from carrygate.workers.calibrations import active_calibration
from carrygate.workers.context import Deadline, Heartbeat, JobFailed, WorkerContext
from carrygate.workers.queue import JobOutcome, finish

log = logging.getLogger(__name__)


SPLIT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
PROBE_FILES = ("dataset.json", *(f"all__{name}.npy" for name in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices",
                                                                 "group_indices")))


def confined_file(path: Path, roots: tuple[Path, ...], what: str, *, allow_empty: bool = True, limit: int = WEIGHTS_LIMIT) -> Path:
    """`path` resolved under the register roots and a regular file (never opened here, so a FIFO cannot block)."""
    try:
        resolved = confine(path, roots)
        check_regular(resolved, limit=limit, allow_empty=allow_empty)
    except UnsafeFile as err:
        raise JobFailed(f"{what}: {err}") from err
    return resolved


def check_checkpoint_paths(path: Path, roots: tuple[Path, ...], what: str) -> Path:
    """A checkpoint a job names (the registered reference, a candidate's `checkpoint`): the folder, its weights
    and the config files beside them all resolve under the roots and are regular files. -> the weights file."""
    try:
        confine(path, roots)
        weights = resolve_weights(path)[1]
    except (UnsafeFile, CheckpointError) as err:
        raise JobFailed(f"{what}: {err}") from err
    confined_file(weights, roots, what, allow_empty=False)
    for name in (OWN_CONFIG, "all_config.yaml", "dataset.json"):
        if (weights.parent / name).exists():
            confined_file(weights.parent / name, roots, what)
    return weights


def check_probe_folder(folder: Path, split: str, roots: tuple[Path, ...]) -> None:
    """Every file `read_split` reads is under the roots and a regular file; the split is a plain name (no `../`)."""
    if not SPLIT_NAME.fullmatch(split) or split in (".", ".."):
        raise JobFailed(f"probe: split {split!r} is not a plain folder name")
    try:
        confine(folder, roots)
    except UnsafeFile as err:
        raise JobFailed(f"probe: {err}") from err
    for name in PROBE_FILES:
        if (folder / split / name).exists() or (folder / split / name).is_symlink():
            confined_file(folder / split / name, roots, "probe", limit=SMALL_FILE_LIMIT if name.endswith(".json") else WEIGHTS_LIMIT)


# -- inputs ----------------------------------------------------------------------------------------
def _check_unchanged(path: Path, sha256: str, roots: tuple[Path, ...] = ()) -> None:
    """A registered file is read where it lies: make sure it is still the file that was registered, still
    under the register roots (a symlink may have been re-pointed since) and still a regular file."""
    weights = check_checkpoint_paths(path, roots, "checkpoint")
    try:
        actual = sha256_regular(weights, limit=WEIGHTS_LIMIT)[0]
    except (UnsafeFile, OSError) as err:
        raise JobFailed(f"checkpoint: {path} is no longer readable: {err}") from err
    if actual != sha256:
        raise JobFailed(f"checkpoint: {weights} changed since it was registered (sha256 {actual[:12]}, "
                        f"registered {sha256[:12]}); register it again")


def materialize_checkpoint(row: Checkpoint, store: ArtifactStore, workdir: Path, roots: tuple[Path, ...] = ()) -> Path:
    """A local path `load_checkpoint` can read: the registered path, or an uploaded file laid out
    with its config file beside it under the name the loader expects."""
    if row.source == "registered":
        path = Path(row.storage_path)
        _check_unchanged(path, row.sha256, roots)
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
        shipped = shipped_data(checkpoint_path)
        if not (shipped / "test" / "dataset.json").is_file():
            raise JobFailed(f"probe: no dataset_path given and the checkpoint ships no data/ folder ({shipped})")
        return shipped, "test"
    folder = cache_dir / "probes" / f"{probe.content_hash[:32]}-{seq_len}"  # builders size puzzles from seq_len
    if (folder / "test" / "dataset.json").is_file():
        return folder, "test"
    args = dict(probe.builder_args)
    size, seed = int(args.pop("size", 64)), int(args.pop("seed", 1234))
    if probe.builder not in BUILDERS:
        raise JobFailed(f"probe: unknown builder {probe.builder!r}")
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix="probe-"))
    build_probe(tmp, probe.builder, seq_len=seq_len, size=size, seed=seed, args=args)
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
    """-> (the loaded checkpoint, the probe puzzles); unreadable or mismatched inputs raise JobFailed.

    The worker re-checks what the API checked at submission (a row may predate a check, or come from
    another API): every path under the register roots and a regular file, candidate checkpoints too; the
    reference's tensors all finite (nothing can be compared against NaN weights); the compute budget,
    now with the checkpoint's full config and the real probe size."""
    roots = ctx.limits.register_roots
    for i, (_, name, spec) in enumerate(inputs.candidates):
        if spec.checkpoint:
            check_checkpoint_paths(Path(spec.checkpoint), roots, f"candidates[{i}] ({name}).checkpoint")
    try:
        path = materialize_checkpoint(inputs.checkpoint, ctx.store, workdir, roots)
        ckpt = load_checkpoint(path, require_finite=True)
        ckpt.model.to(ctx.device)
        folder, split = probe_folder(inputs.probe_row, path, ctx.cache_dir, ckpt.config.seq_len)
        if inputs.probe_row.builder is None:
            check_probe_folder(folder, split, roots)
        data = read_split(folder, split)
        if data.metadata.seq_len != ckpt.config.seq_len:
            raise JobFailed(f"probe: puzzles have seq_len {data.metadata.seq_len}, the checkpoint {ckpt.config.seq_len}")
        probe = Probe.from_split(data, inputs.options.get("limit"), bool(inputs.options.get("labels", True)))
    except (CheckpointError, ValueError, OSError) as err:
        raise JobFailed(str(err)) from err
    limit = ctx.limits.max_gflop
    if limit is not None:
        cost = job_cost(ckpt.config, [spec for _, _, spec in inputs.candidates], len(probe))
        if cost.gflop > limit:
            raise JobFailed(f"compute budget: {cost.describe(limit)}")
    return ckpt, probe


def attach_artifacts(ctx: WorkerContext, result: EvaluationResult, reference: Any, probe: Probe, options: dict[str, Any],
                     workdir: Path) -> None:
    """Keep the ORT files in the store and, when asked, profile them on AI Hub devices."""
    store_artifacts(ctx.store, result, workdir / "artifacts")
    if options.get("aihub"):
        from carrygate.models.aihub import AiHubOptions
        from carrygate.workers.profile.aihub import attach_device_profiles

        attach_device_profiles(result, reference, probe.inputs, probe.puzzle_identifiers, workdir / "artifacts",
                               AiHubOptions.model_validate(options["aihub"]))


def run_job(job_id: str, ctx: WorkerContext, *, on_progress: Callable[[int, int], None] | None = None) -> JobOutcome:
    """Run a claimed job to its end; returns the final status.

    Cancellation, lease loss and the deadline (CARRYGATE_MAX_JOB_SECONDS) are polled before every ACT step
    (`run_partial`'s `should_stop`), so a stopped job frees its worker within a step plus one heartbeat,
    and nothing after the engine (artifacts, AI Hub profiles, the verdict) runs for it."""
    deadline = Deadline(ctx.limits.max_seconds)
    inputs = load_job(ctx, job_id)
    beat = Heartbeat(ctx, job_id)
    beat.start()

    def stopped() -> bool:
        return beat.cancelled.is_set() or beat.lost.is_set() or deadline.passed()

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
                                  on_progress=progress, should_stop=stopped, artifact_dir=Path(workdir) / "artifacts",
                                  halting=inputs.options.get("halting"), calibration=active_calibration(ctx.session_factory),
                                  numerics=inputs.options.get("numerics", "fast"), reference_cache=ctx.reference_cache)
            except ValueError as err:  # a spec that does not fit the architecture
                raise JobFailed(str(err)) from err
            if not stopped():
                attach_artifacts(ctx, result, ckpt.model, probe, inputs.options, Path(workdir))
        beat.beat()  # last progress, and a final look at the cancel flag
        if beat.lost.is_set():
            return "lost"
        if beat.cancelled.is_set():
            return finish_job(ctx, job_id, "cancelled", "cancelled by request")
        if deadline.passed():  # the engine may have stopped early, and artifacts were skipped: no verdict on part of a job
            raise JobFailed(deadline.reason())
        return judge_and_store(ctx, job_id, result, inputs)
    except JobFailed as err:
        return finish_job(ctx, job_id, "failed", str(err))
    finally:
        beat.stop()


def judge_and_store(ctx: WorkerContext, job_id: str, result: EvaluationResult, inputs: JobInputs) -> JobOutcome:
    return _store(ctx, job_id, result.model_dump(mode="json"), judge(result, inputs.policy), inputs.candidates)


def store_artifacts(store: ArtifactStore, result: EvaluationResult, folder: Path) -> None:
    """Keep every onnxruntime candidate's measured .onnx file in the artifact store (content-addressed)
    and record its key in the result, so `GET /jobs/{id}/artifacts/{name}` can serve it."""
    for candidate in result.candidates:
        if candidate.artifact is not None and (folder / candidate.artifact.filename).is_file():
            candidate.artifact.store_key = store.put_file(folder / candidate.artifact.filename).path


def fail_crashed(ctx: WorkerContext, job_id: str, err: BaseException) -> FinishedStatus:
    """An unexpected exception: the job fails with its type and message (the traceback is logged)."""
    return finish_job(ctx, job_id, "failed", f"internal error: {type(err).__name__}: {str(err)[:500]}")


def finish_job(ctx: WorkerContext, job_id: str, status: FinishedStatus, error: str | None) -> FinishedStatus:
    """End the job as `status` if this worker still owns it; a failure's webhook events share the commit."""
    with ctx.session_factory() as session:
        if finish(session, job_id, ctx.worker_id, status, error) and status == "failed":
            enqueue_events(session, job_id, status, error=error)
        session.commit()
    return status


def enqueue_events(session: Session, job_id: str, status: str, **details: Any) -> int:
    """Webhook events of the finished job, in the caller's transaction (the outbox: no verdict without its events)."""
    from sqlalchemy import select

    from carrygate.workers.webhooks import enqueue_job_events

    kind, checkpoint_id, tags = session.execute(select(Job.kind, Job.checkpoint_id, Job.tags).where(Job.id == job_id)).one()
    return enqueue_job_events(session, job_id=job_id, checkpoint_id=checkpoint_id, tags=tags or [], status=status, kind=kind, **details)


def _store(ctx: WorkerContext, job_id: str, body: dict[str, Any], verdict: Any, candidates: list[tuple[str, str, Any]]) -> JobOutcome:
    """Result, verdicts and status in one transaction, only while this worker owns the job."""
    by_name = {name: cid for cid, name, _ in candidates}
    policy = verdict.policy.model_dump(mode="json")

    def write(session: Session) -> None:
        session.add(Result(job_id=job_id, body=body))
        session.add(Verdict(job_id=job_id, candidate_id=None, decision=verdict.decision,
                            rules=[{"rule": "job", "observed": None, "threshold": None, "passed": verdict.decision == "go",
                                    "reason": "; ".join(verdict.reasons)}], policy=policy))
        for cv in verdict.candidates:
            session.add(Verdict(job_id=job_id, candidate_id=by_name[cv.candidate], decision=cv.decision,
                                rules=[r.model_dump(mode="json") for r in cv.rules], policy=policy))
        enqueue_events(session, job_id, "succeeded", decision=verdict.decision, reasons=verdict.reasons, result=body)

    return store_success(ctx, job_id, write)


def store_success(ctx: WorkerContext, job_id: str, write: Callable[[Session], None]) -> JobOutcome:
    """Mark the job succeeded and `write` its rows in one transaction, only while this worker owns it. A
    result row that already exists (an earlier run stored it before losing its lease) makes it a duplicate."""
    with ctx.session_factory() as session:
        try:
            if not finish(session, job_id, ctx.worker_id, "succeeded"):
                session.rollback()
                return "lost"
            write(session)
            session.commit()
        except IntegrityError:
            session.rollback()
            with ctx.session_factory() as again:
                finish(again, job_id, ctx.worker_id, "succeeded")
                again.commit()
            return "duplicate"
    return "succeeded"


def candidate_rows(specs: list[CompressionSpec]) -> list[Candidate]:
    """ORM rows for a job's candidates, with unique display names in submission order."""
    from carrygate.models.evaluate import candidate_name

    taken: set[str] = set()
    return [Candidate(position=i, name=candidate_name(spec, taken), spec=spec.to_dict(), spec_hash=spec.content_hash)
            for i, spec in enumerate(specs)]
