"""Devices: every path runs where it is told, and a missing or unusable device is a clear error.

Parametrised over the devices this machine has: the CPU always, CUDA when present (then these tests
check the GPU path; on a CPU-only machine they check the threading on the CPU)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from carrygate.app.cli import app as cli
from carrygate.models import build_model
from carrygate.models.compress.spec import CompressionSpec
from carrygate.models.devices import check_device, resolve_device
from carrygate.models.evaluate import Probe, evaluate
from carrygate.models.predict import predict_arrays
from carrygate.workers.local import LocalExecutor, WorkerConfig
from tests.conftest import make_tiny_zoo_model, tiny_trm

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
MISSING = f"cuda:{torch.cuda.device_count() + 7}"


@contextmanager
def output_devices() -> Iterator[set[str]]:
    """The device type of every tensor any module returned while inside."""
    seen: set[str] = set()

    def hook(_module: torch.nn.Module, _inputs: object, output: object) -> None:
        for t in output if isinstance(output, tuple) else (output,):
            if isinstance(t, torch.Tensor):
                seen.add(t.device.type)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=f"device '{MISSING}'"):
        resolve_device(MISSING)
    with pytest.raises(ValueError, match="expected cpu, cuda or cuda:N"):
        check_device("tpu")
    with pytest.raises(ValueError, match=f"device '{MISSING}'"):
        check_device(MISSING)  # through a fresh interpreter


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("numerics", ["exact", "fast"])
def test_the_engine_runs_on_the_reference_device(device: str, numerics: str) -> None:
    model = build_model(tiny_trm(mlp_t=True, pos_encodings="none")).eval().to(device)
    g = np.random.default_rng(0)
    probe = Probe(g.integers(1, 5, (12, 9)).astype(np.int32), np.zeros(12, dtype=np.int32), g.integers(1, 5, (12, 9)).astype(np.int64))
    specs = [CompressionSpec.model_validate({"name": "int8", "weights": {"method": "int8-channel"}}),
             CompressionSpec(name="h1", depth={"H_cycles": 1})]
    with output_devices() as seen:
        result = evaluate(model, specs, probe, batch_size=4, numerics=numerics, compile_steps=False, with_footprint=False)  # type: ignore[arg-type]
    assert seen == {torch.device(device).type}
    assert result.puzzles == 12 and len(result.candidates[0].per_puzzle["fidelity"]) == 12
    assert all(isinstance(v, float) for v in result.candidates[0].per_puzzle["fidelity"])  # only host values come back


@pytest.mark.parametrize("device", DEVICES)
def test_predict_runs_on_the_device(device: str) -> None:
    model = build_model(tiny_trm()).eval()
    g = np.random.default_rng(0)
    with output_devices() as seen:
        out = predict_arrays(model, g.integers(1, 5, (6, 9)), np.zeros(6, dtype=np.int64), device=device)
    assert seen == {torch.device(device).type}
    assert out["preds"].shape == (6, 9)


def test_a_worker_with_a_missing_device_refuses_to_start(tmp_path: Path) -> None:
    executor = LocalExecutor(WorkerConfig(database_url=f"sqlite:///{tmp_path / 'db'}", artifact_store=str(tmp_path / "a"),
                                          cache_dir=str(tmp_path / "c"), device=MISSING))
    with pytest.raises(ValueError, match=f"device '{MISSING}'"):
        executor.start()
    assert executor.processes == []  # nothing was spawned


def test_the_cli_refuses_a_missing_device(tmp_path: Path) -> None:
    zoo = make_tiny_zoo_model(tmp_path / "m", steps=2, puzzles=8, seed=0)
    spec = tmp_path / "s.yaml"
    spec.write_text("name: int8\nweights: {method: int8-channel}\n")
    result = CliRunner().invoke(cli, ["evaluate", str(zoo), "--spec", str(spec), "--limit", "4", "--device", MISSING])
    assert result.exit_code != 0
    assert f"device '{MISSING}'" in result.output


def test_onnx_runtime_takes_the_cuda_provider_only_where_it_has_one() -> None:
    import onnxruntime as ort

    from carrygate.models.export import ort_providers

    assert ort_providers("cpu") == ["CPUExecutionProvider"]
    cuda = ort_providers("cuda:0")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert cuda[0] == ("CUDAExecutionProvider", {"device_id": 0}) and cuda[-1] == "CPUExecutionProvider"
    else:  # this build has no CUDA provider: the session runs on the CPU and the outputs move to the job's device
        assert cuda == ["CPUExecutionProvider"]
