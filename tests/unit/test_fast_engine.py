"""The engine's fast numerics and the reference cache (models/fast.py, models/reference_cache.py).

The oracle is the exact path: the official eager step, itself bit-identical to the official code
(tests/unit/test_architecture.py). Fast numerics may differ by rounding only; the cache must give
exactly the uncached numbers, and must miss when anything the reference depends on changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from carrygate.models import build_model
from carrygate.models.compress.spec import CompressionSpec
from carrygate.models.evaluate import Probe, evaluate
from carrygate.models.fast import LeftMixBlock, fast_layout
from carrygate.models.layers import ReasoningBlock
from carrygate.models.reference_cache import ReferenceCache
from carrygate.models.results import EvaluationResult
from tests.conftest import tiny_trm

SPECS = [CompressionSpec.model_validate(s) for s in (
    {"name": "int8", "weights": {"method": "int8-channel"}},
    {"name": "int4", "weights": {"method": "int4", "granularity": "group", "group_size": 8}},
    {"name": "h1", "depth": {"H_cycles": 1}},
)]


def mlp_model(seed: int = 0, dtype: str = "float32") -> Any:
    torch.manual_seed(seed)
    return build_model(tiny_trm(mlp_t=True, pos_encodings="none", forward_dtype=dtype, halt_max_steps=4)).eval()


def probe(n: int = 20, seed: int = 1, labels: bool = True) -> Probe:
    g = np.random.default_rng(seed)
    return Probe(g.integers(1, 5, (n, 9)).astype(np.int32), g.integers(0, 3, n).astype(np.int32),
                 g.integers(1, 5, (n, 9)).astype(np.int64) if labels else None)


def numbers(result: EvaluationResult) -> dict[str, Any]:
    """Everything a verdict reads, per model, without timings and run bookkeeping."""
    body = result.model_dump(mode="json")
    for key in ("seconds", "numerics", "compiled", "reference_cached"):
        body.pop(key)
    return body


def test_fast_layout_is_pure_and_shares_the_weights() -> None:
    model = mlp_model()
    fast = fast_layout(model)
    assert all(type(b) is ReasoningBlock for b in model.L_level.layers)  # the original keeps the official blocks
    assert all(type(b) is LeftMixBlock for b in fast.L_level.layers)
    assert list(fast.state_dict()) == list(model.state_dict())
    assert all(a.data_ptr() == b.data_ptr() for a, b in zip(fast.parameters(), model.parameters(), strict=True))
    attention = build_model(tiny_trm()).eval()
    assert fast_layout(attention) is attention  # nothing to rewrite


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fast_numerics_match_exact_within_rounding(dtype: str) -> None:
    model = mlp_model(dtype=dtype)
    exact = evaluate(model, SPECS, probe(), batch_size=8, numerics="exact", with_footprint=False)
    fast = evaluate(model, SPECS, probe(), batch_size=8, numerics="fast", compile_steps=False, with_footprint=False)
    assert (exact.numerics, fast.numerics) == ("exact", "fast")
    for a, b in zip([exact.reference, *exact.candidates], [fast.reference, *fast.candidates], strict=True):
        np.testing.assert_allclose(a.per_puzzle.get("q_halt", []), b.per_puzzle.get("q_halt", []), atol=1e-4 if dtype == "float32" else 0.1)
        if a.fidelity is not None:
            assert a.fidelity.mean == pytest.approx(b.fidelity.mean, abs=1e-5 if dtype == "float32" else 5e-3)


def test_exact_numerics_refuse_compilation() -> None:
    with pytest.raises(ValueError, match="exact numerics"):
        evaluate(mlp_model(), SPECS[:1], probe(), numerics="exact", compile_steps=True, with_footprint=False)


def test_a_cached_reference_gives_the_uncached_numbers_exactly(tmp_path: Path) -> None:
    cache = ReferenceCache(tmp_path)
    model = mlp_model()
    first = evaluate(model, SPECS, probe(), batch_size=8, compile_steps=False, with_footprint=False, reference_cache=cache)
    assert first.reference_cached is False and len(list(tmp_path.glob("*.safetensors"))) == 1
    second = evaluate(model, SPECS, probe(), batch_size=8, compile_steps=False, with_footprint=False, reference_cache=cache)
    assert second.reference_cached is True
    assert numbers(second) == numbers(first)
    # other candidates on the same reference hit too: the trace is the reference's, not the job's
    other = evaluate(model, SPECS[1:], probe(), batch_size=8, compile_steps=False, with_footprint=False, reference_cache=cache)
    assert other.reference_cached is True
    for a, b in zip(other.candidates, first.candidates[1:], strict=True):  # bootstrap intervals draw from one RNG in model order
        assert (a.per_puzzle, a.step_fidelity, a.fidelity.mean) == (b.per_puzzle, b.step_fidelity, b.fidelity.mean)  # type: ignore[union-attr]


@pytest.mark.parametrize("change", ["weight", "probe", "labels", "batch_size", "numerics", "depth"])
def test_the_cache_misses_when_anything_the_reference_depends_on_changes(tmp_path: Path, change: str) -> None:
    cache = ReferenceCache(tmp_path)
    model = mlp_model()
    kwargs: dict[str, Any] = {"batch_size": 8, "compile_steps": False, "with_footprint": False, "reference_cache": cache}
    evaluate(model, SPECS[:1], probe(), **kwargs)
    puzzles = probe()
    if change == "weight":
        with torch.no_grad():
            model.L_level.layers[0].mlp.down_proj.weight[0, 0] += 1e-3
    elif change == "probe":
        puzzles.inputs[0, 0] = 1 + puzzles.inputs[0, 0] % 4
    elif change == "labels":
        puzzles = probe(labels=False)
    elif change == "batch_size":
        kwargs["batch_size"] = 4
    elif change == "numerics":
        kwargs["numerics"] = "exact"
    result = evaluate(model, SPECS[:1], puzzles, halting={"mode": "fixed", "max_steps": 3} if change == "depth" else None, **kwargs)
    assert result.reference_cached is False
    if change == "weight":  # and the recomputed reference is the changed one
        fresh = evaluate(model, SPECS[:1], puzzles, batch_size=8, compile_steps=False, with_footprint=False)
        assert numbers(result) == numbers(fresh)


def test_a_trace_over_the_cap_is_not_kept(tmp_path: Path) -> None:
    cache = ReferenceCache(tmp_path, max_entry_bytes=10_000)
    result = evaluate(mlp_model(), SPECS[:1], probe(), batch_size=8, compile_steps=False, with_footprint=False, reference_cache=cache)
    assert result.reference_cached is False and not list(tmp_path.glob("*.safetensors"))


def test_a_damaged_entry_is_a_miss_and_is_rewritten(tmp_path: Path) -> None:
    cache = ReferenceCache(tmp_path)
    model = mlp_model()
    first = evaluate(model, SPECS[:1], probe(), batch_size=8, compile_steps=False, with_footprint=False, reference_cache=cache)
    [entry] = tmp_path.glob("*.safetensors")
    entry.write_bytes(entry.read_bytes()[:100])
    again = evaluate(model, SPECS[:1], probe(), batch_size=8, compile_steps=False, with_footprint=False, reference_cache=cache)
    assert again.reference_cached is False and numbers(again) == numbers(first)
    assert evaluate(model, SPECS[:1], probe(), batch_size=8, compile_steps=False, with_footprint=False,
                    reference_cache=cache).reference_cached is True


def test_a_replayed_run_stopped_early_keeps_only_the_batches_it_finished(tmp_path: Path) -> None:
    cache = ReferenceCache(tmp_path)
    model = mlp_model()
    evaluate(model, SPECS[:1], probe(), batch_size=8, compile_steps=False, with_footprint=False, reference_cache=cache)
    calls = {"n": 0}

    def stop_in_second_batch() -> bool:
        calls["n"] += 1
        return calls["n"] > 7  # one poll per batch, one per step (4 steps): stops inside the second batch

    stopped = evaluate(model, SPECS[:1], probe(), batch_size=8, compile_steps=False, with_footprint=False, reference_cache=cache,
                       should_stop=stop_in_second_batch)
    assert stopped.reference_cached is True and stopped.puzzles == 8
    assert len(stopped.reference.per_puzzle["q_halt"]) == 8 == len(stopped.candidates[0].per_puzzle["fidelity"])
    assert len(stopped.noise_floor.per_puzzle["fidelity"]) == 8  # type: ignore[union-attr]
