"""The `onnxruntime` backend: ORT-quantised files run by the lockstep engine against the PyTorch reference.

Fidelity numbers are measured on the shipped zoo models (8 held-out puzzles each, to stay fast) and
printed; the assertions are the ones that hold on them.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from pydantic import ValidationError

from carrygate.gate import GatePolicy, judge
from carrygate.models.checkpoint import load_checkpoint
from carrygate.models.compress import CompressionSpec
from carrygate.models.evaluate import Probe, evaluate
from carrygate.models.results import EvaluationResult, LocalProfile
from carrygate.models.tasks.dataset import read_split
from tests.conftest import ZOO

PUZZLES = 8


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def run(name: str, tmp_path: Path, *yaml: str) -> EvaluationResult:
    model = load_checkpoint(ZOO / name).model
    probe = Probe.from_split(read_split(ZOO / name / "data", "test"), PUZZLES)
    return evaluate(model, [CompressionSpec.from_yaml(y) for y in yaml], probe, batch_size=PUZZLES, artifact_dir=tmp_path)


def producers(path: Path) -> tuple[dict[str, str], dict[str, onnx.NodeProto]]:
    graph = onnx.load(str(path)).graph
    return {out: node.op_type for node in graph.node for out in node.output}, {node.name: node for node in graph.node}


def test_dynamic_int8_fidelity_attention_and_mlp_mixing(tmp_path: Path) -> None:
    spec = "name: ort-dyn\nonnxruntime: {quantization: dynamic, profile_repeats: 0}"
    maze = run("maze-att", tmp_path / "maze", spec).candidates[0]
    sudoku = run("sudoku-mlp", tmp_path / "sudoku", spec).candidates[0]
    assert maze.fidelity is not None and sudoku.fidelity is not None
    print(f"ORT dynamic INT8 fidelity: maze-att {maze.fidelity.mean:.4f} (p05 {maze.fidelity.p05:.4f}), "
          f"sudoku-mlp {sudoku.fidelity.mean:.4f} (p05 {sudoku.fidelity.p05:.4f})")
    assert maze.fidelity.mean >= 0.99  # attention TRM: dynamic INT8 keeps the carry
    # MLP token mixing: per-tensor dynamic activation quantisation drifts the carry (as PyTorch's int8-dynamic).
    assert sudoku.fidelity.mean < 0.99
    for result in (maze, sudoku):
        assert result.artifact is not None and result.artifact.quantization == "dynamic"
        path = tmp_path / ("maze" if result is maze else "sudoku") / result.artifact.filename
        assert path.stat().st_size == result.artifact.bytes
        assert result.footprint is not None and result.footprint.artifact_bytes == result.artifact.bytes
        ops = {node.op_type for node in onnx.load(str(path)).graph.node}
        assert "DynamicQuantizeMatMul" in ops or "MatMulInteger" in ops


def test_fp32_export_candidate_is_the_reference(tmp_path: Path) -> None:
    result = run("sudoku-mlp", tmp_path, "onnxruntime: {quantization: none, profile_repeats: 0}")
    candidate = result.candidates[0]
    assert candidate.fidelity is not None and candidate.fidelity.mean > 0.99999
    assert candidate.answer_agreement == 1.0
    assert candidate.artifact is not None and candidate.artifact.export_max_abs_diff["z_H_next"] < 1e-4


def test_static_qdq_with_and_without_exclusions(tmp_path: Path) -> None:
    result = run("maze-att", tmp_path,
                 "name: qdq\nonnxruntime: {quantization: static, per_channel: true, calibration: minmax, calibration_puzzles: 4, "
                 "profile_repeats: 0}",
                 "name: qdq-keep-heads\nonnxruntime: {quantization: static, per_channel: true, calibration: percentile, "
                 "calibration_puzzles: 2, nodes_to_exclude: ['*lm_head*', '*q_head*'], profile_repeats: 0}")
    plain, kept = result.candidates
    for candidate in (plain, kept):
        assert candidate.fidelity is not None and candidate.artifact is not None
        print(candidate.name, f"fidelity {candidate.fidelity.mean:.5f}", candidate.artifact.notes)
        assert candidate.fidelity.mean >= 0.99
    assert plain.artifact is not None and kept.artifact is not None
    assert plain.artifact.nodes_excluded == []
    assert kept.artifact.nodes_excluded and all("lm_head" in n or "q_head" in n for n in kept.artifact.nodes_excluded)
    assert "2 probe puzzles" in kept.artifact.notes[-1]
    # Without exclusions the lm_head MatMul reads dequantised (QDQ) inputs; with them it stays float.
    produced_by, nodes = producers(tmp_path / plain.artifact.filename)
    head = next(n for name, n in nodes.items() if "lm_head" in name and n.op_type == "MatMul")
    assert {produced_by.get(i) for i in head.input} == {"DequantizeLinear"}
    produced_by, nodes = producers(tmp_path / kept.artifact.filename)
    head = next(n for name, n in nodes.items() if "lm_head" in name and n.op_type == "MatMul")
    assert "DequantizeLinear" not in {produced_by.get(i) for i in head.input}
    assert kept.artifact.bytes > plain.artifact.bytes  # float heads weigh more than int8 ones


def test_int4_matmulnbits_and_unmatched_exclusion(tmp_path: Path) -> None:
    result = run("maze-att", tmp_path, "onnxruntime: {quantization: int4, op_types_to_quantize: [MatMul], block_size: 32, "
                                       "profile_repeats: 0}")
    candidate = result.candidates[0]
    assert candidate.fidelity is not None and candidate.artifact is not None
    print(f"ORT int4 MatMulNBits fidelity maze-att {candidate.fidelity.mean:.5f}, {candidate.artifact.bytes} bytes")
    ops = {node.op_type for node in onnx.load(str(tmp_path / candidate.artifact.filename)).graph.node}
    assert "MatMulNBits" in ops
    assert candidate.fidelity.mean >= 0.99
    with pytest.raises(ValueError, match=r"candidates\[0\].*onnxruntime.nodes_to_exclude: '\*no_such_node\*'"):
        run("maze-att", tmp_path / "bad", "onnxruntime: {quantization: dynamic, nodes_to_exclude: ['*no_such_node*']}")


def test_spec_validation_and_stable_hash() -> None:
    with pytest.raises(ValidationError, match="onnxruntime: weights is PyTorch-side"):
        CompressionSpec.from_yaml("onnxruntime: {}\nweights: {method: int8-channel}")
    with pytest.raises(ValidationError, match="int4"):
        CompressionSpec.from_yaml("onnxruntime: {quantization: int4, op_types_to_quantize: [MatMul, Gemm]}")
    with pytest.raises(ValidationError):
        CompressionSpec.from_yaml("onnxruntime: {quantization: qint3}")
    plain = CompressionSpec.from_yaml("weights: {method: int8-channel}")
    assert "onnxruntime" not in plain.canonical_json()  # specs without it keep their content hash
    ort = CompressionSpec.from_yaml("onnxruntime: {quantization: static}\nprune: {sparsity: 0.25}")
    assert ort.display_name == "prune-intermediate-0.25+ort-static"
    assert CompressionSpec.model_validate(ort.to_dict()).content_hash == ort.content_hash
    from carrygate.models.compress.fit import spec_problems
    from tests.conftest import tiny_trm

    flash = CompressionSpec.from_yaml("onnxruntime: {flash_row: true}")
    assert spec_problems(flash, tiny_trm(puzzle_emb_ndim=0, puzzle_emb_len=0)) == [
        "onnxruntime.flash_row: this model has no puzzle-embedding table to stream"]
    assert spec_problems(flash, tiny_trm()) == []


def test_local_profile_schema_and_latency_gate(tmp_path: Path) -> None:
    result = run("maze-att", tmp_path, "name: dyn\nonnxruntime: {quantization: dynamic, profile_repeats: 2}",
                 "name: torch-int8\nweights: {method: int8-channel}")
    ort, torch_candidate = result.candidates
    profile = ort.profile
    assert profile is not None and torch_candidate.profile is None
    again = EvaluationResult.model_validate_json(result.model_dump_json())  # the stored JSON document round-trips
    assert again.candidates[0].profile == profile
    assert set(LocalProfile.model_fields) <= set(profile.model_dump())
    assert profile.puzzles == 2 and profile.steps == 8 and profile.batch_size == 1
    assert 0 < profile.step_latency_ms_p50 <= profile.step_latency_ms_p95
    assert profile.puzzle_latency_ms_p50 >= profile.steps * min(profile.step_latency_ms_p50, profile.step_latency_ms_mean) * 0.5
    assert profile.host_overhead_ms_per_puzzle >= 0 and profile.session_load_ms > 0
    assert profile.model_file_bytes == (tmp_path / ort.artifact.filename).stat().st_size  # type: ignore[union-attr]
    assert profile.peak_memory_bytes is not None and profile.peak_memory_bytes > 0
    assert profile.ops and abs(sum(op.share for op in profile.ops) - 1) < 1e-6
    assert any(op.op_type in ("DynamicQuantizeMatMul", "MatMulInteger") for op in profile.ops)
    print("profile", profile.model_dump(exclude={"ops"}), [(o.op_type, round(o.us_per_step)) for o in profile.ops[:6]])

    relaxed: dict[str, object] = {"min_fidelity_mean": None, "min_fidelity_p05": None, "min_answer_agreement": None,
                                  "max_puzzle_exact_drop": None, "max_predicted_exact_drop": None}
    roomy = judge(result, GatePolicy(**relaxed, max_step_latency_ms=1e6, max_artifact_bytes=10**9))
    assert [v.decision for v in roomy.candidates] == ["go", "inconclusive"]  # the torch candidate has no profile
    tight = judge(result, GatePolicy(**relaxed, max_step_latency_ms=1e-6))
    assert tight.candidates[0].decision == "no_go"
    assert judge(result, GatePolicy(**relaxed, max_artifact_bytes=ort.artifact.bytes - 1)).candidates[0].decision == "no_go"  # type: ignore[union-attr]
    unbudgeted = judge(result, GatePolicy(**relaxed))
    assert [v.decision for v in unbudgeted.candidates] == ["go", "go"]  # no budget set: a missing profile does not matter


def test_structural_parts_and_host_carry_codec_travel_with_the_file(tmp_path: Path) -> None:
    """prune + INT8 carry storage + a fixed-batch flash-row file: the fp32 file measures like its PyTorch twin."""
    structural = "prune: {sparsity: 0.25}\ncarry: {bits: 8}\n"
    result = run("sudoku-mlp", tmp_path, "name: torch\n" + structural,
                 "name: file\n" + structural + "onnxruntime: {quantization: none, batch_size: 4, flash_row: true, profile_repeats: 0}")
    twin, file = result.candidates
    assert twin.fidelity is not None and file.fidelity is not None and file.artifact is not None
    print(f"prune-25 + carry-int8: PyTorch {twin.fidelity.mean:.6f}, ORT file {file.fidelity.mean:.6f}")
    assert file.artifact.export_max_abs_diff["z_H_next"] < 1e-4  # the codec runs in both host loops
    assert abs(file.fidelity.mean - twin.fidelity.mean) < 2e-3
    assert file.artifact.batch_size == 4 and file.artifact.flash_row
