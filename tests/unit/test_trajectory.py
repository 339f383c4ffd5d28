"""The streaming engine equals a brute-force computation from saved carries; non-finite handling."""

from __future__ import annotations

import json

import numpy as np
import torch

from carrygate.models import build_model
from carrygate.models.compress import CompressionSpec, apply
from carrygate.models.metrics import token_cosine
from carrygate.models.trajectory import Batch, Candidate, Partial, finish, merge, run_lockstep, run_partial
from tests.conftest import tiny_trm


def _batches(n: int, batch: int, seq_len: int = 9, with_labels: bool = True) -> list[Batch]:
    g = torch.Generator().manual_seed(5)
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        inputs = torch.randint(0, 5, (b, seq_len), generator=g)
        labels = torch.randint(1, 5, (b, seq_len), generator=g) if with_labels else None
        out.append((inputs, torch.randint(0, 3, (b,), generator=g), labels))
    return out


def _perturbed(model: torch.nn.Module, scale: float) -> torch.nn.Module:
    import copy

    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return other


def test_streaming_equals_brute_force_from_saved_carries() -> None:
    ref = build_model(tiny_trm(halt_max_steps=4))
    cand = _perturbed(ref, 0.05)
    batches = _batches(10, 4)
    result = run_lockstep(ref, [Candidate("perturbed", cand)], batches)

    # brute force: store every carry of both models, then reduce
    zr, zc, preds_r, preds_c = [], [], [], []
    with torch.inference_mode():
        for inputs, ids, _ in batches:
            r = list(ref.steps(inputs, ids))
            c = list(cand.steps(inputs, ids))
            zr.append(torch.stack([o.carry.z_H for o in r]))
            zc.append(torch.stack([o.carry.z_H for o in c]))
            preds_r.append(r[-1].logits.argmax(-1))
            preds_c.append(c[-1].logits.argmax(-1))
    zr_all, zc_all = torch.cat(zr, dim=1), torch.cat(zc, dim=1)  # (steps, N, T, D)
    fid = token_cosine(zc_all[-1], zr_all[-1]).mean(-1)
    step_fid = token_cosine(zc_all, zr_all).mean(-1).mean(-1)
    consec = token_cosine(zc_all[1:], zc_all[:-1]).mean(-1).mean(-1)
    answer = (torch.cat(preds_c) == torch.cat(preds_r)).all(-1).float().mean()

    cr = result.candidates[0]
    assert result.puzzles == 10
    assert cr.fidelity is not None and cr.fidelity.mean is not None
    assert abs(cr.fidelity.mean - float(fid.mean())) < 1e-6
    assert abs(cr.fidelity.min - float(fid.min())) < 1e-6
    assert np.allclose(cr.step_fidelity, step_fid.numpy(), atol=1e-6)
    assert cr.consecutive_similarity.curve[0] is None
    assert np.allclose(cr.consecutive_similarity.curve[1:], consec.numpy(), atol=1e-6)
    assert abs(cr.answer_agreement - float(answer)) < 1e-9
    assert np.allclose(cr.per_puzzle["fidelity"], fid.numpy(), atol=1e-6)
    assert cr.fidelity.mean < 0.9999  # the perturbation is visible, so the comparison is not vacuous


def test_reference_against_itself_is_exactly_one() -> None:
    ref = build_model(tiny_trm())
    result = run_lockstep(ref, [Candidate("same", apply(CompressionSpec(), ref))], _batches(6, 3))
    cr = result.candidates[0]
    assert cr.fidelity.mean == 1.0 and cr.fidelity.min == 1.0  # exactly
    assert cr.answer_agreement == 1.0 and cr.cell_agreement == 1.0 and cr.halting_agreement == 1.0
    assert cr.delta_puzzle_exact == 0.0 and cr.delta_cell_accuracy == 0.0


def test_nan_weights_flag_non_finite_and_others_continue() -> None:
    ref = build_model(tiny_trm())
    broken = _perturbed(ref, 0.0)
    with torch.no_grad():
        broken.L_level.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    fine = _perturbed(ref, 0.01)
    result = run_lockstep(ref, [Candidate("nan", broken), Candidate("fine", fine)], _batches(6, 3))
    nan_result, fine_result = result.candidates
    assert nan_result.non_finite is not None and nan_result.non_finite.step == 0
    assert nan_result.fidelity is None and nan_result.puzzle_exact is None
    assert fine_result.non_finite is None and fine_result.fidelity.mean > 0.9


def test_no_labels_gives_null_accuracy_and_deeper_candidates_run_their_own_steps() -> None:
    ref = build_model(tiny_trm(halt_max_steps=3))
    deeper = apply(CompressionSpec(depth={"halt_max_steps": 5}), ref)
    result = run_lockstep(ref, [Candidate("deeper", deeper)], _batches(4, 4, with_labels=False))
    cr = result.candidates[0]
    assert not result.labels and cr.cell_accuracy is None and cr.puzzle_exact is None
    assert cr.steps == 5 and len(cr.step_fidelity) == 5 and cr.step_fidelity[3] is None
    assert cr.step_fidelity[2] == 1.0  # same weights, same first 3 steps: exactly


def _shards(batches: list[Batch], n: int) -> list[list[Batch]]:
    """Contiguous runs of whole batches, the last one longest when it does not divide evenly."""
    size = len(batches) // n
    return [batches[i * size:(i + 1) * size if i < n - 1 else len(batches)] for i in range(n)]


def test_shards_merged_equal_a_single_run_bit_for_bit() -> None:
    ref = build_model(tiny_trm(halt_max_steps=4))
    poisoned = _perturbed(ref, 0.02)
    with torch.no_grad():  # token 4 only occurs in batch 3 below: this candidate goes non-finite there and nowhere else
        poisoned.embed_tokens.embedding_weight[4] = float("nan")
    candidates = [Candidate("perturbed", _perturbed(ref, 0.05)), Candidate("nan-in-one-batch", poisoned),
                  Candidate("deeper", apply(CompressionSpec(depth={"halt_max_steps": 6}), ref))]
    batches = [(inputs.clamp(max=3), ids, labels) for inputs, ids, labels in _batches(20, 3)]  # 7 batches, the last of 2 puzzles
    inputs, ids, labels = batches[3]
    batches[3] = (torch.cat([torch.full((1, inputs.shape[1]), 4), inputs[1:]]), ids, labels)

    single = run_lockstep(ref, candidates, batches, seed=3).model_dump(mode="json")
    assert single["candidates"][1]["non_finite"] is not None and single["candidates"][0]["fidelity"]["mean"] < 0.9999
    del single["seconds"]
    for n in (2, 3):
        # each partial goes through JSON as a shard's row would
        partials = [Partial.from_json(json.loads(json.dumps(run_partial(ref, candidates, shard).to_json())))
                    for shard in _shards(batches, n)]
        assert [p.candidates[1].non_finite is not None for p in partials] == [False, True] + [False] * (n - 2)
        merged = finish(merge(partials), candidates, seed=3).model_dump(mode="json")
        del merged["seconds"]
        assert merged == single  # every float, bit for bit
