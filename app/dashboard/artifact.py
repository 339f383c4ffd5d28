"""The job page's deployable-artifact section (onnxruntime candidates): the stored file, its local ONNX
Runtime profile, kernel time per op type, and the AI Hub devices it ran on, with the gate rules that read them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from carrygate.app.dashboard.data import RuleRow, Trace
from carrygate.models.numbers import finite

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


def _op_traces(candidates: list[dict[str, Any]], top: int) -> tuple[list[Trace], list[str]]:
    """Horizontal bars of kernel µs per ACT step: the `top` op types by their largest time in any candidate, plus
    each candidate's remaining ops summed into one bar; one trace per profiled candidate."""
    profiled = [(str(c["name"]), (c.get("profile") or {}).get("ops") or []) for c in candidates]
    peak: dict[str, float] = {}
    for _, ops in profiled:
        for op in ops:
            us = finite(op.get("us_per_step"))
            if us is not None:
                peak[str(op.get("op_type"))] = max(peak.get(str(op.get("op_type")), 0.0), us)
    shown = sorted(peak, key=lambda op_type: -peak[op_type])[:top]
    traces, has_rest = [], False
    for name, ops in profiled:
        by_type = {str(op.get("op_type")): op for op in ops if finite(op.get("us_per_step")) is not None}
        if not by_type:
            continue
        bars = [(op_type, finite(by_type[op_type]["us_per_step"]), finite(by_type[op_type].get("calls_per_step")),
                 finite(by_type[op_type].get("share"))) for op_type in shown if op_type in by_type]
        rest = [op for op_type, op in by_type.items() if op_type not in shown]
        if rest:
            has_rest = True
            bars.append((OTHER_OPS, sum(finite(op["us_per_step"]) or 0.0 for op in rest),
                         sum(finite(op.get("calls_per_step")) or 0.0 for op in rest), sum(finite(op.get("share")) or 0.0 for op in rest)))
        traces.append({"type": "bar", "orientation": "h", "name": name, "y": [b[0] for b in bars], "x": [b[1] for b in bars],
                       "customdata": [[b[2], b[3]] for b in bars],
                       "hovertemplate": f"{name}<br>%{{y}}: %{{x:.1f}} µs per step, %{{customdata[0]:.1f}} calls per step,"
                                        " %{customdata[1]:.1%} of kernel time<extra></extra>"})
    return traces, shown + ([OTHER_OPS] if has_rest else [])


def _device_row(candidate: str, device: dict[str, Any]) -> DeviceRow:
    summary = device.get("execution_summary") or {}
    fidelity = [v for v in map(finite, device.get("step_fidelity") or []) if v is not None]
    diffs = [v for v in map(finite, device.get("step_max_abs_diff") or []) if v is not None]
    inference_us = finite(summary.get("estimated_inference_time"))
    return DeviceRow(candidate=candidate, device=str(device.get("device_name") or device.get("device_requested") or "?"),
                     device_os=device.get("device_os"), status=str(device.get("status")), reason=device.get("reason"),
                     compute_units={str(k): int(v) for k, v in (device.get("compute_units") or {}).items() if _int(v) is not None},
                     inference_ms=None if inference_us is None else inference_us / 1000,
                     peak_memory_bytes=_int(summary.get("estimated_inference_peak_memory")),
                     step_fidelity_min=min(fidelity) if fidelity else None,
                     step_fidelity_mean=sum(fidelity) / len(fidelity) if fidelity else None, max_abs_diff=max(diffs) if diffs else None)


def artifact_section(body: dict[str, Any], rules: list[RuleRow], top_ops: int = TOP_OPS) -> ArtifactSection | None:
    """The job page's "Deployable artifact" section from a result document: one row per candidate that has an
    ONNX file, a local profile or AI Hub device profiles, the per-op chart, the device rows and the gate's
    latency / size / device rules of those candidates. None when no candidate has any of them."""
    candidates = [c for c in body.get("candidates", []) if c.get("artifact") or c.get("profile") or c.get("device_profiles")]
    if not candidates:
        return None
    rows = []
    for cand in candidates:
        artifact, profile = cand.get("artifact") or {}, cand.get("profile") or {}
        rows.append(ArtifactRow(
            candidate=str(cand["name"]), filename=artifact.get("filename"), quantization=artifact.get("quantization"),
            file_bytes=_int(artifact.get("bytes")) or _int(profile.get("model_file_bytes")), stored=bool(artifact.get("store_key")),
            runtime=profile.get("runtime"), threads=_int(profile.get("threads")), batch_size=_int(profile.get("batch_size")),
            steps=_int(profile.get("steps")), puzzles=_int(profile.get("puzzles")),
            step_ms_p50=finite(profile.get("step_latency_ms_p50")), step_ms_p95=finite(profile.get("step_latency_ms_p95")),
            puzzle_ms_p50=finite(profile.get("puzzle_latency_ms_p50")), puzzle_ms_p95=finite(profile.get("puzzle_latency_ms_p95")),
            host_overhead_ms=finite(profile.get("host_overhead_ms_per_puzzle")), session_load_ms=finite(profile.get("session_load_ms")),
            peak_memory_bytes=_int(profile.get("peak_memory_bytes"))))
    traces, order = _op_traces(candidates, top_ops)
    devices = [_device_row(str(c["name"]), d) for c in candidates for d in c.get("device_profiles") or []]
    names = {row.candidate for row in rows}
    return ArtifactSection(rows=rows, op_traces=traces, op_order=order, devices=devices,
                           rules=[r for r in rules if r.rule in ARTIFACT_RULES and r.candidate in names])
