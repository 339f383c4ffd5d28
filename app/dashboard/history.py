"""Checkpoints with their latest verdicts, and one model's fidelity per spec across its checkpoint versions.

Successive versions of a model are the checkpoints registered or uploaded under the same name; a spec is
followed across them by its content hash (renaming a candidate does not break its line).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy.orm import Session

from carrygate.app.dashboard.data import Trace, job_decision, load_jobs, points_of
from carrygate.app.services.dashboard import list_checkpoints
from carrygate.store.tables import JOB_SCOPE, Checkpoint, Job


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
    checkpoints = list_checkpoints(session=session)
    jobs = load_jobs(session, with_result=False)
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
    versions = [c for c in list_checkpoints(session=session, newest_first=False) if family_of(c) == family]
    labels = [f"v{i + 1} {c.sha256[:8]} ({c.created_at:%Y-%m-%d %H:%M})" for i, c in enumerate(versions)]
    series: dict[str, dict[str, float | None]] = {}
    names: dict[str, str] = {}
    for label, ckpt in zip(labels, versions, strict=True):
        version_names: dict[str, str] = {}
        for job in load_jobs(session, status="succeeded", checkpoint_id=ckpt.id):  # newest first: the first value per spec wins
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
    counts = Counter(family_of(c) for c in list_checkpoints(session=session))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
