"""Qualcomm AI Hub: compile the exported step for real phones, run it there, compare it step by step.

For every requested device name (resolved at run time with `get_devices`; the resolved name and OS
are stored):

1. `submit_compile_job(model=<the candidate's .onnx>, device, input_specs=<fixed batch shapes>)`;
2. `submit_inference_job(model=<compiled target>, device, inputs=<probe carries>, profile=True)`:
   one input entry per (probe puzzle, ACT step) holding the *reference's* carry entering that step,
   so each on-device output is compared with the reference's output of the same step (teacher
   forced: on-device fidelity per step, independent of the host loop);
3. `download_output_data()` -> token-cosine fidelity and max |Δ| of z_H per step;
   `download_profile()` -> `execution_summary` (times in µs, memory in bytes) and the compute-unit
   breakdown (layers on NPU / GPU / CPU).

No network, a bad token, rate limiting, a failed or timed-out job: that device's profile is
`inconclusive` with the reason — never an exception out of here, never a silent pass. The token
comes from `CARRYGATE_AIHUB_TOKEN` or a per-job reference (`env:NAME` / `file:/path`) resolved on the
worker; it is never written into results (reasons are scrubbed of it).

The client is `qai_hub.Client(config=qai_hub.ClientConfig(api_token=...))` (`pip install
'carrygate[aihub]'`); tests pass a fake with the same signatures and job state machine. The real
client retries a dead network with back-off for ~45 s before failing, so the first call (device
lookup) runs under `connect_timeout_seconds` and everything else under `job_timeout_seconds`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from carrygate.models.aihub import AiHubOptions
from carrygate.models.results import DeviceProfile

T = TypeVar("T")
ClientFactory = Callable[[str], Any]  # token -> an object with the qai_hub.Client interface


def resolve_token(options: AiHubOptions, default: str | None) -> str | None:
    """The token a reference points at (read now, on the worker), else the settings default."""
    ref = options.token_ref
    if ref is None:
        return default or None
    if ref.startswith("env:"):
        return os.environ.get(ref[4:]) or None
    try:
        return Path(ref[5:]).read_text().strip() or None
    except OSError:
        return None


def real_client(token: str) -> Any:
    import qai_hub

    return qai_hub.Client(config=qai_hub.ClientConfig(api_token=token))


def _call_with_deadline(fn: Callable[[], T], seconds: float) -> T:
    """Run `fn` in a daemon thread; TimeoutError if it has not answered in `seconds` (the thread is
    abandoned: an offline qai_hub call sits in its back-off loop and must not hold the job)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the caller as is
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True, name="aihub-call")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer from AI Hub within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def classify(err: BaseException) -> str:
    """A reason for `inconclusive` from a qai_hub (or network) exception, by the client's error classes."""
    kind = type(err).__name__
    text = str(err).strip().splitlines()[0] if str(err).strip() else kind
    if kind == "RateLimitedError":
        return f"rate-limited by AI Hub: {text}"
    if kind == "UserError" and ("authenticat" in str(err).lower() or "token" in str(err).lower()):
        return f"AI Hub rejected the API token: {text}"
    if isinstance(err, TimeoutError):
        return f"timed out: {text}"
    if kind == "InternalError":
        return f"AI Hub unavailable or unreachable: {text}"
    return f"AI Hub call failed ({kind}): {text}"


@dataclass(frozen=True)
class StepProbe:
    """What the device is fed and compared against: per (puzzle, step) the reference's input feed and
    the reference's z_H after that step. Arrays carry a leading batch axis of the graph's batch (1)."""

    feeds: list[dict[str, np.ndarray]]  # input name -> (1, ...) array, in graph input order
    reference_z_H: list[np.ndarray]  # (1, T, D) each
    steps: list[int]  # ACT step index of each entry


def _token_cosine_mean(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64).reshape(-1, a.shape[-1]), b.astype(np.float64).reshape(-1, b.shape[-1])
    cos = (a64 * b64).sum(-1) / np.maximum(np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1), 1e-12)
    return float(cos.mean())


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def _output_list(outputs: Any, name: str) -> list[np.ndarray]:
    if not isinstance(outputs, dict) or not outputs:
        raise ValueError("the inference job returned no output data")
    key = name if name in outputs else next(iter(outputs))  # some runtimes rename outputs (output_0, ...)
    return [np.asarray(v) for v in outputs[key]]


def profile_device(client: Any, onnx_path: Path, device_name: str, probe: StepProbe, options: AiHubOptions,
                   token: str | None = None) -> DeviceProfile:
    """Compile, run and compare on one device; every failure becomes an `inconclusive` profile."""
    record: dict[str, Any] = {"device_requested": device_name}

    def inconclusive(reason: str) -> DeviceProfile:
        return DeviceProfile(status="inconclusive", reason=_scrub(reason, token), **record)

    try:
        devices = _call_with_deadline(lambda: client.get_devices(name=device_name), options.connect_timeout_seconds)
    except BaseException as err:  # noqa: BLE001 - any failure of the remote service is a reason, not a crash
        return inconclusive(classify(err))
    if not devices:
        return inconclusive(f"no AI Hub device named {device_name!r}")
    device = devices[0]
    record |= {"device_name": getattr(device, "name", device_name), "device_os": getattr(device, "os", None) or None}
    deadline = options.job_timeout_seconds
    try:
        input_specs = {name: (tuple(array.shape), str(array.dtype)) for name, array in probe.feeds[0].items()}
        compile_job = _call_with_deadline(lambda: client.submit_compile_job(model=str(onnx_path), device=device, name="carrygate-step",
                                                                            input_specs=input_specs, options=options.compile_options,
                                                                            retry=False), options.connect_timeout_seconds)
        record["compile_job_id"] = getattr(compile_job, "job_id", None)
        status = compile_job.wait(timeout=int(deadline))
        if not status.success:
            return inconclusive(f"compile job {record['compile_job_id']} {status.code}: {status.message or 'no message'}")
        target = compile_job.get_target_model()
        if target is None:
            return inconclusive(f"compile job {record['compile_job_id']} produced no target model")
        dataset = {name: [feed[name] for feed in probe.feeds] for name in probe.feeds[0]}
        inference_job = _call_with_deadline(lambda: client.submit_inference_job(model=target, device=device, inputs=dataset,
                                                                                name="carrygate-step-probe", retry=False, profile=True),
                                            options.connect_timeout_seconds)
        record["inference_job_id"] = getattr(inference_job, "job_id", None)
        status = inference_job.wait(timeout=int(deadline))
        if not status.success:
            return inconclusive(f"inference job {record['inference_job_id']} {status.code}: {status.message or 'no message'}")
        on_device = _output_list(inference_job.download_output_data(), "z_H_next")
        profile = inference_job.download_profile() or {}
    except BaseException as err:  # noqa: BLE001
        return inconclusive(classify(err))
    if len(on_device) != len(probe.reference_z_H):
        return inconclusive(f"expected {len(probe.reference_z_H)} outputs from the device, got {len(on_device)}")
    n_steps = max(probe.steps) + 1
    fid: list[list[float]] = [[] for _ in range(n_steps)]
    diff: list[list[float]] = [[] for _ in range(n_steps)]
    for step, got, want in zip(probe.steps, on_device, probe.reference_z_H, strict=True):
        got = got.reshape(want.shape)
        fid[step].append(_token_cosine_mean(got, want))
        diff[step].append(float(np.abs(got.astype(np.float64) - want).max()))
    units: dict[str, int] = {}
    for layer in profile.get("execution_detail", []):
        unit = str(layer.get("compute_unit", "?"))
        units[unit] = units.get(unit, 0) + 1
    return DeviceProfile(status="ok", execution_summary=_jsonable(profile.get("execution_summary", {})), compute_units=units,
                         step_fidelity=[float(np.mean(f)) if f else None for f in fid],
                         step_max_abs_diff=[max(d) if d else None for d in diff], **record)


def _jsonable(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in summary.items()}


def profile_on_devices(onnx_path: Path, probe: StepProbe, options: AiHubOptions, token: str | None,
                       client_factory: ClientFactory = real_client) -> list[DeviceProfile]:
    """One `DeviceProfile` per requested device; without a token every one is inconclusive."""
    if not token:
        return [DeviceProfile(status="inconclusive", reason="no AI Hub token (set CARRYGATE_AIHUB_TOKEN or options.aihub.token_ref)",
                              device_requested=name) for name in options.devices]
    try:
        client = client_factory(token)
    except BaseException as err:  # noqa: BLE001 - e.g. qai_hub not installed
        reason = f"AI Hub client unavailable: {type(err).__name__}: {err}"
        if isinstance(err, ImportError):
            reason += " (pip install 'carrygate[aihub]')"
        return [DeviceProfile(status="inconclusive", reason=_scrub(reason, token), device_requested=name) for name in options.devices]
    return [profile_device(client, onnx_path, name, probe, options, token) for name in options.devices]


def reference_step_probe(reference: Any, runner: Any, inputs: np.ndarray, puzzle_identifiers: np.ndarray) -> StepProbe:
    """Per puzzle and ACT step: the feed (reference carry entering the step, as the exported graph
    takes it, batch 1) and the reference's z_H after the step.

    Args:
        reference: the PyTorch reference (`RecursiveReasoner`).
        runner: the candidate's `OrtReasoner` (its input names and host-side puzzle input).
    """
    import torch

    feeds: list[dict[str, np.ndarray]] = []
    outs: list[np.ndarray] = []
    steps: list[int] = []
    names: Sequence[str] = runner.input_names
    with torch.no_grad():
        for i in range(inputs.shape[0]):
            x_in = torch.from_numpy(np.asarray(inputs[i:i + 1], np.int32))
            ids = torch.from_numpy(np.asarray(puzzle_identifiers[i:i + 1], np.int32))
            host = runner.input_embeddings(x_in, ids)
            x = reference.input_embeddings(x_in, ids)
            carry = reference.initial_carry(1)
            for t in range(reference.config.halt_max_steps):
                arrays = (carry.z_H.float().numpy(), carry.z_L.float().numpy(), host.inputs, host.puzzle)
                feeds.append({name: np.ascontiguousarray(a) for name, a in zip(names, arrays, strict=True)})
                out = reference.step(carry, x, t)
                outs.append(out.carry.z_H.float().numpy().astype(np.float64))
                steps.append(t)
                carry = out.carry
    return StepProbe(feeds=feeds, reference_z_H=outs, steps=steps)


def attach_device_profiles(result: Any, reference: Any, inputs: np.ndarray, puzzle_identifiers: np.ndarray, folder: Path,
                           options: AiHubOptions, *, default_token: str | None = None,
                           client_factory: ClientFactory = real_client) -> None:
    """The job stage: profile every onnxruntime candidate's file (in `folder`) on the requested devices
    and attach the profiles to `result` (an `EvaluationResult`). The default token is
    `CARRYGATE_AIHUB_TOKEN` from the worker's environment."""
    from carrygate.models.export import OrtReasoner

    token = resolve_token(options, default_token or os.environ.get("CARRYGATE_AIHUB_TOKEN"))
    for candidate in result.candidates:
        if candidate.artifact is None or not (folder / candidate.artifact.filename).is_file():
            continue
        path = folder / candidate.artifact.filename
        runner = OrtReasoner.from_model(path, reference)
        probe = reference_step_probe(reference, runner, inputs[:options.puzzles], puzzle_identifiers[:options.puzzles])
        candidate.device_profiles = profile_on_devices(path, probe, options, token, client_factory)
