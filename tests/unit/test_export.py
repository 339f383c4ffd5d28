"""ONNX single-step export: round trip against PyTorch on the shipped zoo models, batch modes, flash row, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from carrygate.models.checkpoint import load_checkpoint
from carrygate.models.export import FLASH_ROW_INPUT, INPUT_NAMES, OPSET, OUTPUT_NAMES, OrtReasoner, check_export, export_step, read_metadata
from carrygate.models.tasks.dataset import read_split
from tests.conftest import REPO, ZOO


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def probe(name: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    split = read_split(ZOO / name / "data", "test")
    return (torch.from_numpy(np.asarray(split.inputs[:n], np.int32)), torch.from_numpy(np.asarray(split.puzzle_identifiers[:n], np.int32)))


@pytest.mark.parametrize("name", ["sudoku-mlp", "maze-att"])
def test_export_round_trip_matches_pytorch(name: str, tmp_path: Path) -> None:
    model = load_checkpoint(ZOO / name).model
    exported = export_step(model, tmp_path / "step.onnx")
    proto = onnx.load(str(exported.path))
    assert [i.name for i in proto.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    assert {o.domain: o.version for o in proto.opset_import}[""] == OPSET == exported.opset
    # Every MatMul weight is an initializer itself (quantizers need that), none behind an Identity.
    assert not [n for n in proto.graph.node if n.op_type == "Identity"]
    runner = OrtReasoner.from_model(exported.path, model)
    inputs, ids = probe(name, 4)
    check = check_export(model, runner, inputs, ids)
    print(name, "step max|diff|", check.step, "trajectory", check.trajectory)
    assert check.steps == model.config.halt_max_steps
    assert check.step["z_H_next"] < 1e-4 and check.step["z_L_next"] < 1e-4
    assert check.step["logits"] < 1e-3 and check.step["q_halt_logits"] < 1e-3
    assert check.trajectory["z_H_next"] < 1e-2
    # Dynamic batch: other batch sizes run and agree with PyTorch.
    for B in (1, 3):
        x = runner.input_embeddings(inputs[:B], ids[:B])
        out = runner.step(runner.initial_carry(B), x, 0)
        with torch.no_grad():
            ref = model.step(model.initial_carry(B), model.input_embeddings(inputs[:B], ids[:B]), 0)
        assert out.logits.shape == ref.logits.shape
        assert float((out.carry.z_H - ref.carry.z_H).abs().max()) < 1e-4


def test_fixed_batch_flash_row_export(tmp_path: Path) -> None:
    model = load_checkpoint(ZOO / "maze-att").model
    exported = export_step(model, tmp_path / "fixed.onnx", batch_size=1, flash_row=True)
    proto = onnx.load(str(exported.path))
    inputs_by_name = {i.name: i for i in proto.graph.input}
    assert FLASH_ROW_INPUT in inputs_by_name and "puzzle_identifiers" not in inputs_by_name
    dims = [d.dim_value for d in inputs_by_name["z_H"].type.tensor_type.shape.dim]
    assert dims == [1, model.config.total_len, model.config.hidden_size]
    # The table is not in the graph: the host streams one row.
    assert not [i for i in proto.graph.initializer if "puzzle_emb" in i.name]
    meta = read_metadata(exported.path)
    assert json.loads(meta["carrygate.batch_size"]) == 1 and json.loads(meta["carrygate.flash_row"]) is True
    runner = OrtReasoner.from_model(exported.path, model)
    inputs, ids = probe("maze-att", 3)  # 3 puzzles through a batch-1 graph: the host chunks them
    check = check_export(model, runner, inputs, ids, n_steps=2)
    assert check.step["z_H_next"] < 1e-4 and check.step["logits"] < 1e-3


def test_ort_reasoner_refuses_a_foreign_onnx_file(tmp_path: Path) -> None:
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "other.onnx"))
    with pytest.raises(ValueError, match="not a carrygate step export"):
        OrtReasoner(tmp_path / "other.onnx", np.zeros(4), np.zeros(4))


def test_export_rejects_bad_batch(tmp_path: Path) -> None:
    model = load_checkpoint(ZOO / "sudoku-mlp").model
    with pytest.raises(ValueError, match="batch_size"):
        export_step(model, tmp_path / "x.onnx", batch_size=0)


def test_export_cli_reports_max_abs_diff(tmp_path: Path) -> None:
    spec = tmp_path / "prune.yaml"
    spec.write_text("name: prune-25\nprune: {sparsity: 0.25}\n")
    out = tmp_path / "step.onnx"
    run = subprocess.run([sys.executable, "-m", "carrygate.app", "export", str(ZOO / "sudoku-mlp"), "--out", str(out), "--spec", str(spec),
                          "--batch-size", "1", "--check-puzzles", "2"],
                         capture_output=True, text=True, cwd=REPO, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert out.is_file() and report["bytes"] == out.stat().st_size
    assert report["batch_size"] == 1 and report["quantization"] == "none"
    assert 0 <= report["export_max_abs_diff"]["z_H_next"] < 1e-4
    bad = subprocess.run([sys.executable, "-m", "carrygate.app", "export", str(ZOO / "sudoku-mlp"), "--out", str(tmp_path / "b.onnx"),
                          "--spec", str(tmp_path / "missing.yaml")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and "missing.yaml" in bad.stderr


def test_dynamo_exporter_opset18_weights_are_initializers(tmp_path: Path) -> None:
    model = load_checkpoint(ZOO / "sudoku-mlp").model
    exported = export_step(model, tmp_path / "dynamo.onnx", exporter="dynamo")
    proto = onnx.load(str(exported.path))
    assert exported.opset == 18 and {o.domain: o.version for o in proto.opset_import}[""] == 18
    inits = {i.name for i in proto.graph.initializer}
    # Weights reach their MatMul as initializers (the exporter's Transpose nodes are folded), so ORT can quantise them.
    assert not [n for n in proto.graph.node if n.op_type == "Transpose" and n.input[0] in inits]
    weight_matmuls = [n for n in proto.graph.node if n.op_type in ("MatMul", "Gemm") and any(i in inits for i in n.input)]
    # H(L+1) = 8 applications x 2 blocks x 2 SwiGLUs (mlp_t, mlp) x 2 matmuls, + lm_head, + q_head (Gemm)
    assert len(weight_matmuls) == 8 * 2 * 2 * 2 + 1 + 1
    inputs, ids = probe("sudoku-mlp", 2)
    check = check_export(model, OrtReasoner.from_model(exported.path, model), inputs, ids, n_steps=2)
    assert check.step["z_H_next"] < 1e-4
