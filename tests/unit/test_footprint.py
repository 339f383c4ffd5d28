"""Analytic FLOPs equal TRM_FACTS §8; bytes follow each storage format; SRAM model is consistent."""

from __future__ import annotations

import pytest
import torch

from carrygate.models import HRMConfig, TRMConfig, build_model
from carrygate.models.compress import CompressionSpec, apply
from carrygate.models.compress.activations import quantize_activations_
from carrygate.models.compress.spec import ActivationSpec
from carrygate.models.footprint import flops_per_puzzle, flops_per_step, footprint, tensor_bytes
from tests.conftest import tiny_trm

FULL = {"H_cycles": 3, "L_layers": 2, "hidden_size": 512, "expansion": 4, "num_heads": 8, "puzzle_emb_ndim": 512, "halt_max_steps": 16}


def test_flops_reproduce_the_trm_facts_table() -> None:
    att_arc = TRMConfig(seq_len=900, vocab_size=12, num_puzzle_identifiers=1, L_cycles=4, **FULL)
    mlp_sudoku = TRMConfig(seq_len=81, vocab_size=11, num_puzzle_identifiers=1, L_cycles=6, mlp_t=True, pos_encodings="none", **FULL)
    hrm_arc = HRMConfig(seq_len=900, vocab_size=12, num_puzzle_identifiers=1, H_cycles=2, L_cycles=2, H_layers=4, L_layers=4,
                        hidden_size=512, expansion=4, num_heads=8, puzzle_emb_ndim=512, halt_max_steps=16)
    assert flops_per_step(att_arc, include_attention_scores=False) / 1e9 == pytest.approx(187.3, abs=0.05)
    assert flops_per_step(att_arc) / 1e9 == pytest.approx(238.9, abs=0.05)
    assert flops_per_puzzle(att_arc, include_attention_scores=False) / 1e9 == pytest.approx(2997, abs=0.5)
    assert flops_per_step(mlp_sudoku) / 1e9 == pytest.approx(25.6, abs=0.05)
    assert flops_per_step(hrm_arc, include_attention_scores=False) / 1e9 == pytest.approx(147.4, abs=0.05)


def test_bytes_by_storage_format() -> None:
    model = build_model(tiny_trm(hidden_size=64, num_heads=2))
    fp32 = tensor_bytes(model)
    layer = "L_level.layers.0.mlp.down_proj"
    out_f, in_f = model.L_level.layers[0].mlp.down_proj.weight.shape
    assert fp32[layer] == out_f * in_f * 4
    assert tensor_bytes(apply(CompressionSpec(precision="bf16"), model))[layer] == out_f * in_f * 2
    int8 = apply(CompressionSpec.model_validate({"weights": {"method": "int8-channel"}}), model)
    assert tensor_bytes(int8)[layer] == out_f * in_f + 4 * out_f
    int4 = apply(CompressionSpec.model_validate({"weights": {"method": "int4", "granularity": "per_channel"}}), model)
    assert tensor_bytes(int4)[layer] < tensor_bytes(int8)[layer] / 1.8
    pruned = apply(CompressionSpec.model_validate({"prune": {"sparsity": 0.5}}), model)
    assert tensor_bytes(pruned)[layer] == out_f * (in_f // 2) * 4  # half the intermediate columns removed


def test_footprint_totals_sram_and_carry() -> None:
    model = build_model(tiny_trm(hidden_size=64, num_heads=2, num_puzzle_identifiers=1000, puzzle_emb_ndim=64))
    ref = footprint(model)
    assert ref.embedding_table_bytes == 1000 * 64 * 4
    assert ref.total_bytes == ref.backbone_bytes + ref.embedding_table_bytes
    assert ref.sram_full_load_bytes > ref.sram_streaming_bytes
    assert ref.sram_streaming_bytes < ref.backbone_bytes + ref.embedding_table_bytes  # one row streamed, not the table
    assert ref.carry_bytes_per_puzzle == 2 * model.config.total_len * 64 * 4
    carried = footprint(apply(CompressionSpec(carry={"bits": 8}), model))
    assert carried.carry_bytes_per_puzzle == 2 * model.config.total_len * (64 + 4)
    int8_table = footprint(apply(CompressionSpec(puzzle_embedding={"method": "int8"}), model))
    assert int8_table.embedding_table_bytes == 1000 * 64 + 1000 * 4
    assert ref.fits_8mb and ref.gflops_per_puzzle == pytest.approx(model.config.halt_max_steps * ref.gflops_per_step)


def test_activation_observer_keeps_ranges_per_step_and_pooled_differs() -> None:
    model = build_model(tiny_trm(halt_max_steps=4))
    data = [(torch.randint(0, 5, (8, 9)), torch.zeros(8, dtype=torch.long))]
    observers = quantize_activations_(apply(CompressionSpec(), model).model, ActivationSpec(calibration_puzzles=8), data, ["*"], [])
    ranges = observers["L_level.layers.0.mlp.gate_up_proj"].ranges
    assert sorted(ranges) == [0, 1, 2, 3]
    assert len(set(ranges.values())) > 1  # the range drifts along the recursion
    per_step = apply(CompressionSpec.model_validate({"weights": {"method": "int8-channel"}, "activations": {"ranges": "per_step"}}),
                     model, calibration=data)
    pooled = apply(CompressionSpec.model_validate({"weights": {"method": "int8-channel"}, "activations": {"ranges": "pooled"}}),
                   model, calibration=data)
    x, ids = data[0]
    with torch.inference_mode():
        a, b = per_step(x, ids), pooled(x, ids)
    assert torch.isfinite(a.carry.z_H).all() and not torch.equal(a.carry.z_H, b.carry.z_H)


def test_bnb_layers_are_counted_once() -> None:
    model = build_model(tiny_trm(hidden_size=64, num_heads=2))
    layer = "L_level.layers.0.mlp.down_proj"
    out_f, in_f = model.L_level.layers[0].mlp.down_proj.weight.shape
    for body, most in (({"method": "int8-bnb"}, out_f * in_f + 8 * out_f), ({"method": "nf4"}, out_f * in_f // 2 + 4 * out_f * in_f // 64)):
        per_tensor = tensor_bytes(apply(CompressionSpec.model_validate({"weights": body}), model))
        assert per_tensor[layer] <= most, body
        assert not [k for k in per_tensor if k.startswith(layer + ".")], body  # the wrapped bnb module is inside it
