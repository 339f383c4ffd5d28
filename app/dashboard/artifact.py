"""The job page's deployable-artifact section (onnxruntime candidates): the stored file, its local ONNX
Runtime profile, kernel time per op type, and the AI Hub devices it ran on, with the gate rules that read them."""

from __future__ import annotations

from dataclasses import dataclass

from carrygate.app.dashboard.data import RuleRow, Trace
from carrygate.models.numbers import finite
from carrygate.models.results import DeviceProfile, EvaluationResult, ModelResult

TOP_OPS = 8
"""The op chart names the op types that take the most kernel time in any candidate; each candidate's rest is one bar."""
OTHER_OPS = "other ops"
ARTIFACT_RULES = ("max_step_latency_ms", "max_artifact_bytes", "device_profile")
"""The gate's rules that read the file, its local profile and its device profiles."""


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class ArtifactRow:
    """One candidate's measured file and its local ONNX Runtime profile (None where not measured)."""

    candidate: str
    filename: str | None
    quantization: str | None
    file_bytes: int | None
    stored: bool  # the service kept the file: GET /jobs/{id}/artifacts/{candidate} serves it
    runtime: str | None
    threads: int | None
    batch_size: int | None
    steps: int | None
    puzzles: int | None
    step_ms_p50: float | None
    step_ms_p95: float | None
    puzzle_ms_p50: float | None
    puzzle_ms_p95: float | None
    host_overhead_ms: float | None
    session_load_ms: float | None
    peak_memory_bytes: int | None


@dataclass(frozen=True)
class DeviceRow:
    """One Qualcomm AI Hub device of one candidate: what ran where and how close it stayed, or why it is inconclusive."""

    candidate: str
    device: str  # the name AI Hub resolved, else the one requested
    device_os: str | None
    status: str
    reason: str | None
    compute_units: dict[str, int]
    inference_ms: float | None  # execution_summary.estimated_inference_time is in µs
    peak_memory_bytes: int | None
    step_fidelity_min: float | None
    step_fidelity_mean: float | None
    max_abs_diff: float | None


@dataclass(frozen=True)
class ArtifactSection:
    rows: list[ArtifactRow]
    op_traces: list[Trace]
    op_order: list[str]  # category order of the op chart, most expensive first
    devices: list[DeviceRow]
    rules: list[RuleRow]


def _op_traces(candidates: list[ModelResult], top: int) -> tuple[list[Trace], list[str]]:
    """Horizontal bars of kernel µs per ACT step: the `top` op types by their largest time in any candidate, plus
    each candidate's remaining ops summed into one bar; one trace per profiled candidate."""
    profiled = [(c.name, c.profile.ops if c.profile is not None else []) for c in candidates]
    peak: dict[str, float] = {}
    for _, ops in profiled:
        for op in ops:
            us = finite(op.us_per_step)
            if us is not None:
                peak[op.op_type] = max(peak.get(op.op_type, 0.0), us)
    shown = sorted(peak, key=lambda op_type: -peak[op_type])[:top]
    traces, has_rest = [], False
    for name, ops in profiled:
        by_type = {op.op_type: op for op in ops if finite(op.us_per_step) is not None}
        if not by_type:
            continue
        bars = [(op_type, finite(by_type[op_type].us_per_step), finite(by_type[op_type].calls_per_step),
                 finite(by_type[op_type].share)) for op_type in shown if op_type in by_type]
        rest = [op for op_type, op in by_type.items() if op_type not in shown]
        if rest:
            has_rest = True
            bars.append((OTHER_OPS, sum(finite(op.us_per_step) or 0.0 for op in rest),
                         sum(finite(op.calls_per_step) or 0.0 for op in rest), sum(finite(op.share) or 0.0 for op in rest)))
        traces.append({"type": "bar", "orientation": "h", "name": name, "y": [b[0] for b in bars], "x": [b[1] for b in bars],
                       "customdata": [[b[2], b[3]] for b in bars],
                       "hovertemplate": f"{name}<br>%{{y}}: %{{x:.1f}} µs per step, %{{customdata[0]:.1f}} calls per step,"
                                        " %{customdata[1]:.1%} of kernel time<extra></extra>"})
    return traces, shown + ([OTHER_OPS] if has_rest else [])


def _device_row(candidate: str, device: DeviceProfile) -> DeviceRow:
    summary = device.execution_summary  # AI Hub's own document: its fields are AI Hub's, not ours
    fidelity = [v for v in map(finite, device.step_fidelity) if v is not None]
    diffs = [v for v in map(finite, device.step_max_abs_diff) if v is not None]
    inference_us = finite(summary.get("estimated_inference_time"))
    return DeviceRow(candidate=candidate, device=device.device_name or device.device_requested or "?",
                     device_os=device.device_os, status=device.status, reason=device.reason,
                     compute_units=dict(device.compute_units), inference_ms=None if inference_us is None else inference_us / 1000,
                     peak_memory_bytes=_int(summary.get("estimated_inference_peak_memory")),
                     step_fidelity_min=min(fidelity) if fidelity else None,
                     step_fidelity_mean=sum(fidelity) / len(fidelity) if fidelity else None, max_abs_diff=max(diffs) if diffs else None)


def _artifact_row(cand: ModelResult) -> ArtifactRow:
    artifact, profile = cand.artifact, cand.profile
    return ArtifactRow(
        candidate=cand.name, filename=artifact.filename if artifact else None, quantization=artifact.quantization if artifact else None,
        file_bytes=(artifact.bytes if artifact else None) or (profile.model_file_bytes if profile else None),
        stored=bool(artifact and artifact.store_key),
        runtime=profile.runtime if profile else None, threads=profile.threads if profile else None,
        batch_size=profile.batch_size if profile else None, steps=profile.steps if profile else None,
        puzzles=profile.puzzles if profile else None,
        step_ms_p50=finite(profile.step_latency_ms_p50) if profile else None,
        step_ms_p95=finite(profile.step_latency_ms_p95) if profile else None,
        puzzle_ms_p50=finite(profile.puzzle_latency_ms_p50) if profile else None,
        puzzle_ms_p95=finite(profile.puzzle_latency_ms_p95) if profile else None,
        host_overhead_ms=finite(profile.host_overhead_ms_per_puzzle) if profile else None,
        session_load_ms=finite(profile.session_load_ms) if profile else None,
        peak_memory_bytes=profile.peak_memory_bytes if profile else None)


def artifact_section(result: EvaluationResult, rules: list[RuleRow], top_ops: int = TOP_OPS) -> ArtifactSection | None:
    """The job page's "Deployable artifact" section from a result: one row per candidate that has an
    ONNX file, a local profile or AI Hub device profiles, the per-op chart, the device rows and the gate's
    latency / size / device rules of those candidates. None when no candidate has any of them."""
    candidates = [c for c in result.candidates if c.artifact or c.profile or c.device_profiles]
    if not candidates:
        return None
    rows = [_artifact_row(cand) for cand in candidates]
    traces, order = _op_traces(candidates, top_ops)
    devices = [_device_row(c.name, d) for c in candidates for d in c.device_profiles]
    names = {row.candidate for row in rows}
    return ArtifactSection(rows=rows, op_traces=traces, op_order=order, devices=devices,
                           rules=[r for r in rules if r.rule in ARTIFACT_RULES and r.candidate in names])
