"""Emulated half precision: close to the native half model, cheap, and honest about itself."""

from __future__ import annotations

import pytest
import torch

from carrygate.models import build_model
from carrygate.models.compress import CompressionSpec, apply, half
from carrygate.models.compress.candidate import CompressedCandidate
from carrygate.models.compress.half import emulate_half_, round_to
from carrygate.models.footprint import artifact_size
from tests.conftest import tiny_trm


def _final_z_H(model: torch.nn.Module | CompressedCandidate, inputs: torch.Tensor) -> torch.Tensor:
    pids = torch.zeros(inputs.shape[0], dtype=torch.int32)
    *_, last = model.steps(inputs, pids)
    return last.carry.z_H.float()


def test_emulated_bf16_tracks_the_native_bf16_model(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    reference = build_model(tiny_trm(forward_dtype="float32")).eval()
    inputs = torch.randint(1, reference.config.vocab_size, (4, reference.config.seq_len), dtype=torch.int32)
    native = build_model(tiny_trm(forward_dtype="bfloat16")).eval()
    native.load_state_dict(reference.state_dict())
    emulated = apply(CompressionSpec(precision="fp32"), reference).model
    emulate_half_(emulated, torch.bfloat16)
    with torch.no_grad():
        ref, nat, emu = (_final_z_H(m, inputs) for m in (reference, native, emulated))
    cos = torch.nn.functional.cosine_similarity
    # the emulation is as far from fp32 as native bf16 is (same storage), and near native bf16 itself
    assert cos(emu.flatten(1), nat.flatten(1)).min() > 0.99
    gap_native = (1 - cos(ref.flatten(1), nat.flatten(1))).mean()
    gap_emulated = (1 - cos(ref.flatten(1), emu.flatten(1))).mean()
    assert gap_emulated > 0 and gap_emulated < 10 * gap_native + 1e-6
    assert emulated.dtype == torch.float32
    # apply records the emulation on the candidate (storage), where the CPU has no native bf16 path
    monkeypatch.setattr(half, "native_bf16", lambda: False)
    candidate = apply(CompressionSpec(precision="bf16"), reference)
    assert candidate.storage.half == torch.bfloat16 and candidate.model.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(_final_z_H(candidate, inputs), emu, rtol=0, atol=0)


def test_emulation_rounds_the_weights_and_reports_half_storage() -> None:
    model = build_model(tiny_trm(forward_dtype="float32"))
    emulated = apply(CompressionSpec(precision="fp16"), model)
    weight = next(m.weight for m in emulated.model.modules() if isinstance(m, torch.nn.Linear))
    assert torch.equal(weight, round_to(weight, torch.float16))
    assert artifact_size(emulated) < 0.6 * artifact_size(model)  # 2-byte floats, as deployed
