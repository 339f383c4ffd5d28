"""A fake of the `qai_hub` client interface (qai-hub 0.56), for tests: no machine here reaches AI Hub.

It follows the real client's signatures (`Client(config=ClientConfig(api_token))`, `get_devices(name,
os, attributes)`, `submit_compile_job(model, device, name, input_specs, options, ..., retry)`,
`submit_inference_job(model, device, inputs, name, options, retry, profile)`, `Job.wait(timeout)`,
`get_status()`, `CompileJob.get_target_model()`, `InferenceJob.download_output_data()` /
`download_profile()`), its error classes (`UserError` on a 401, `RateLimitedError` on a 429 when
`retry=False`, `InternalError`), and its job state machine: every `get_status()` poll advances one
state (compile: CREATED -> OPTIMIZING_MODEL -> SUCCESS; inference with profiling: CREATED ->
PROVISIONING_DEVICE -> MEASURING_PERFORMANCE -> SUCCESS | FAILED), `wait` polls until finished.
The "device" runs the compiled model with ONNX Runtime on this CPU, so outputs are real numbers.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import onnx


class Error(Exception):
    pass


class InternalError(Error):
    pass


class UserError(Error):
    pass


class RateLimitedError(Error):
    pass


@dataclass
class ClientConfig:
    api_token: str
    api_url: str = "https://app.aihub.qualcomm.com"
    web_url: str = "https://app.aihub.qualcomm.com"
    verbose: bool = False
    client_mode: str = "library"
    default_project: str | None = None


@dataclass
class Device:
    name: str = ""
    os: str = ""
    attributes: str | list[str] = field(default_factory=list)


class JobStatus:
    class State(Enum):
        SUCCESS = 3
        FAILED = 4
        CREATED = 1
        UNSPECIFIED = 0
        OPTIMIZING_MODEL = 2
        PROVISIONING_DEVICE = 5
        MEASURING_PERFORMANCE = 6
        RUNNING_INFERENCE = 7

    def __init__(self, state: JobStatus.State, message: str | None = None) -> None:
        self.state, self.message = state, message

    @property
    def code(self) -> str:
        return self.state.name

    @property
    def success(self) -> bool:
        return self.state is JobStatus.State.SUCCESS

    @property
    def failure(self) -> bool:
        return self.state is JobStatus.State.FAILED

    @property
    def finished(self) -> bool:
        return self.success or self.failure

    @property
    def pending(self) -> bool:
        return self.state is JobStatus.State.CREATED

    @property
    def running(self) -> bool:
        return not self.finished and not self.pending


@dataclass
class Model:
    model_id: str
    path: Path


_ids = itertools.count(1)


class Job:
    def __init__(self, owner: Client, states: list[JobStatus.State], failure: str | None = None) -> None:
        self.job_id = f"j{next(_ids):07d}"
        self._owner, self._states, self._failure = owner, states, failure
        self._index = 0
        self.polls = 0

    def get_status(self) -> JobStatus:
        self._owner._check_token()
        self.polls += 1
        state = self._states[min(self._index, len(self._states) - 1)]
        self._index += 1
        return JobStatus(state, self._failure if state is JobStatus.State.FAILED else None)

    def wait(self, timeout: int | None = None) -> JobStatus:
        status = self.get_status()
        while status.running or status.pending:
            if timeout is not None and self.polls > 1000:
                raise TimeoutError(f"Waiting for job ({self.job_id}) completion timed out after {timeout} seconds.")
            status = self.get_status()
        return status


class CompileJob(Job):
    def __init__(self, owner: Client, model: Path, device: Device, input_specs: dict[str, Any], failure: str | None) -> None:
        final = JobStatus.State.FAILED if failure else JobStatus.State.SUCCESS
        super().__init__(owner, [JobStatus.State.CREATED, JobStatus.State.OPTIMIZING_MODEL, final], failure)
        self.device, self.input_specs = device, input_specs
        self._model = model

    def get_target_model(self) -> Model | None:
        status = self.wait()
        return Model(model_id=f"m{self.job_id}", path=self._model) if status.success else None


class InferenceJob(Job):
    def __init__(self, owner: Client, model: Model, device: Device, inputs: dict[str, list[np.ndarray]], profile: bool,
                 failure: str | None) -> None:
        final = JobStatus.State.FAILED if failure else JobStatus.State.SUCCESS
        middle = JobStatus.State.MEASURING_PERFORMANCE if profile else JobStatus.State.RUNNING_INFERENCE
        super().__init__(owner, [JobStatus.State.CREATED, JobStatus.State.PROVISIONING_DEVICE, middle, final], failure)
        self.model, self.device, self.inputs, self.profiling = model, device, inputs, profile

    def download_output_data(self, filename: str | None = None) -> dict[str, list[np.ndarray]] | None:
        import onnxruntime as ort

        if not self.wait().success:
            return None
        session = ort.InferenceSession(str(self.model.path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        out: dict[str, list[np.ndarray]] = {name: [] for name in names}
        entries = len(next(iter(self.inputs.values())))
        for i in range(entries):
            values = session.run(None, {name: arrays[i] for name, arrays in self.inputs.items()})
            for name, value in zip(names, values, strict=True):
                out[name].append(value)
        return out

    def download_profile(self, filename: str | None = None) -> dict[str, Any]:
        if not self.wait().success:
            return {}
        nodes = onnx.load(str(self.model.path)).graph.node
        units = ["NPU", "NPU", "NPU", "CPU"]  # a deterministic mix, as a real HTP run reports some CPU fallbacks
        detail = [{"name": n.name, "type": n.op_type, "compute_unit": units[i % len(units)], "execution_time": 10}
                  for i, n in enumerate(nodes)]
        summary = {"estimated_inference_time": 1234, "estimated_inference_peak_memory": 4_194_304, "first_load_time": 50_000,
                   "warm_load_time": 20_000, "inference_memory_peak_range": (1_000_000, 4_194_304)}
        return {"execution_summary": summary, "execution_detail": detail}


class Client:
    """Scenario knobs (not part of the real interface): `valid_tokens`, `devices`, `rate_limited`,
    `fail_compile`, `fail_inference`, `hang_seconds` (the network never answers get_devices)."""

    valid_tokens: tuple[str, ...] = ("good-token",)
    devices: tuple[Device, ...] = (Device("Samsung Galaxy S24 (Family)", "14", ["os:android", "chipset:qualcomm-snapdragon-8gen3"]),
                                   Device("Snapdragon X Elite CRD", "11", ["os:windows"]))
    rate_limited = False
    fail_compile: str | None = None
    fail_inference: str | None = None
    hang_seconds = 0.0

    def __init__(self, config: ClientConfig | None = None, profile: str | None = None, default_project_id: str | None = None,
                 client_mode: str = "library") -> None:
        if config is None:
            raise UserError("Failed to load client configuration file.")
        self.config = config

    def _check_token(self) -> None:
        if self.config.api_token not in self.valid_tokens:
            raise UserError("Failed to authenticate.\nFailure to authenticate is likely caused by a bad or expired API token.")

    def get_devices(self, name: str = "", os: str = "", attributes: str | list[str] | None = None) -> list[Device]:
        if self.hang_seconds:
            import time

            time.sleep(self.hang_seconds)
        self._check_token()
        return [d for d in self.devices if (not name or d.name == name) and (not os or d.os == os)]

    def _submit(self, retry: bool) -> None:
        self._check_token()
        if self.rate_limited:
            if retry:
                raise AssertionError("the real client would sleep and retry for minutes; callers must pass retry=False")
            raise RateLimitedError("Too many requests: the job submission rate limit was reached.")

    def submit_compile_job(self, model: Any, device: Device | list[Device], name: str | None = None,
                           input_specs: dict[str, Any] | None = None, options: str = "", single_compile: bool = True,
                           calibration_data: Any = None, retry: bool = True, project: Any = None) -> CompileJob:
        self._submit(retry)
        path = Path(str(model))
        if not path.is_file():
            raise UserError(f"Model file {path} does not exist")
        onnx.checker.check_model(str(path))
        if not isinstance(device, Device):
            raise UserError("one device per job in this fake")
        for spec_name, spec in (input_specs or {}).items():
            shape = spec[0] if isinstance(spec, tuple) and isinstance(spec[0], tuple) else spec
            if not all(isinstance(d, int) and d > 0 for d in shape):
                raise UserError(f"input_specs[{spec_name}]: AI Hub compiles static shapes, got {shape}")
        return CompileJob(self, path, device, input_specs or {}, self.fail_compile)

    def submit_inference_job(self, model: Any, device: Device | list[Device], inputs: Any = None, name: str | None = None,
                             options: str = "", retry: bool = True, profile: bool = True, project: Any = None) -> InferenceJob:
        self._submit(retry)
        if not isinstance(model, Model):
            raise UserError("model must be a compiled target model")
        if not isinstance(inputs, dict) or not inputs:
            raise UserError("inputs must be a dict of lists of arrays (DatasetEntries)")
        return InferenceJob(self, model, device if isinstance(device, Device) else device[0], inputs, profile, self.fail_inference)
