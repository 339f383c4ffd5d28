"""`carrygate recommend` (issue 16): planted fragile module, front monotone, YAML through `gate --local`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from carrygate.models import build_model
from carrygate.models.compress import CompressionSpec, apply
from carrygate.models.evaluate import Probe
from carrygate.models.recommend import Budget, Tolerance, module_groups, pareto_front, recommend, spec_for
from carrygate.models.recommend.replay import Replay
from carrygate.models.recommend.search import badness
from tests.conftest import make_tiny_zoo_model, tiny_trm

FRAGILE = "L_level.layers.1.mlp"


def _probe(n: int, config: object) -> Probe:
    rng = np.random.default_rng(0)
    inputs = rng.integers(1, config.vocab_size, size=(n, config.seq_len)).astype(np.int32)  # type: ignore[attr-defined]
    ids = rng.integers(0, config.num_puzzle_identifiers, size=n).astype(np.int32)  # type: ignore[attr-defined]
    return Probe(inputs, ids)


def _fragile_model() -> torch.nn.Module:
    """A tiny TRM with one planted fragile module: in `FRAGILE`'s SwiGLU one intermediate unit is dead
    (its gate/up rows are zero) and its down-projection column is 1000 sigma. The reference computes
    exactly what it did (0 x anything), but every per-channel integer scale of that module, even at
    8 bits, is set by the dead column and rounds all live weights away: only float keeps it."""
    model = build_model(tiny_trm(halt_max_steps=3))
    with torch.no_grad():
        gate_up = model.get_submodule(f"{FRAGILE}.gate_up_proj").weight
        down = model.get_submodule(f"{FRAGILE}.down_proj").weight
        inter = down.shape[1]
        gate_up[[0, inter]] = 0.0
        down[:, 0] = 1000.0 * down.std()
    return model.eval()


@pytest.fixture(scope="module")
def fragile_recommendation() -> tuple[object, object]:
    torch.manual_seed(0)
    model = _fragile_model()
    rec = recommend(model, _probe(24, model.config), Budget(max_weight_fraction=0.75), Tolerance(min_fidelity=0.99), search_puzzles=12,
                    batch_size=12)
    return model, rec


def test_groups_cover_every_linear() -> None:
    model = build_model(tiny_trm())
    groups = module_groups(model)
    layers = [layer for g in groups for layer in g.layers]
    assert sorted(layers) == sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    assert {g.kind for g in groups} == {"attention", "channel_mlp", "heads"}


def test_mixed_spec_quantises_each_group_at_its_width() -> None:
    model = build_model(tiny_trm())
    groups = module_groups(model)
    bits = {g.name: 3 for g in groups} | {groups[0].name: None, groups[1].name: 8}
    spec = CompressionSpec.from_yaml(spec_for(groups, bits).to_yaml())  # round-trips as YAML
    candidate = apply(spec, model)
    for group in groups:
        for layer in group.layers:
            got = getattr(candidate.model.get_submodule(layer), "bits", None)
            assert got == bits[group.name], (layer, got)
    # a spec without per-group layers keeps the content hash it always had
    assert "layers" not in CompressionSpec.model_validate({"weights": {"method": "int4"}}).canonical_json()


def test_replay_reuses_the_reference_trajectory() -> None:
    model = build_model(tiny_trm()).eval()
    replay = Replay(model)
    x, ids = torch.randint(0, 5, (2, 9)), torch.zeros(2, dtype=torch.int32)
    for _ in range(2):
        emb, carry = replay.input_embeddings(x, ids), replay.initial_carry(2)
        outs = []
        for t in range(3):
            out = replay.step(carry, emb, t)
            carry = out.carry
            outs.append(out.logits)
    assert replay.computed_steps == 3 and replay.replayed_steps == 3
    with torch.inference_mode():
        direct = list(model.steps(x, ids))[-1].logits
    torch.testing.assert_close(outs[-1], direct)


def test_planted_fragile_module_is_found_and_protected(fragile_recommendation: tuple[object, object]) -> None:
    _, rec = fragile_recommendation
    assert rec.sensitivity.order[0] == FRAGILE  # type: ignore[attr-defined]
    assert rec.chosen is not None  # type: ignore[attr-defined]
    chosen = next(p for p in rec.points if p.name == rec.chosen.name)  # type: ignore[attr-defined]
    assert chosen.bits[FRAGILE] is None, chosen.bits  # kept in float
    assert any(b is not None for b in chosen.bits.values())  # while the rest is quantised
    # and it is protected because it must be: no evaluated point with it quantised passes
    assert not any(p.within_tolerance for p in rec.points if p.bits[FRAGILE] is not None)  # type: ignore[attr-defined]


def test_front_is_monotone(fragile_recommendation: tuple[object, object]) -> None:
    _, rec = fragile_recommendation
    front = sorted((p for p in rec.points if p.on_front), key=lambda p: p.cost.weight_bytes)  # type: ignore[attr-defined]
    assert len(front) >= 2
    for a, b in zip(front, front[1:], strict=False):
        assert a.cost.weight_bytes <= b.cost.weight_bytes
        assert badness(b.damage, rec.tolerance) < badness(a.damage, rec.tolerance)  # type: ignore[attr-defined]
    assert [p.name for p in pareto_front(rec.points, rec.tolerance)] == [p.name for p in front]  # type: ignore[attr-defined]
    # nothing evaluated dominates a front point
    for p in front:
        assert not any(q.cost.weight_bytes <= p.cost.weight_bytes and badness(q.damage, rec.tolerance) < badness(p.damage, rec.tolerance)
                       for q in rec.points if q.name != p.name)  # type: ignore[attr-defined]


def test_more_steps_than_the_reference_are_searched(fragile_recommendation: tuple[object, object]) -> None:
    _, rec = fragile_recommendation
    assert any(p.depth_steps > rec.reference_steps for p in rec.points) or not any(  # type: ignore[attr-defined]
        p.within_budget and not p.within_tolerance for p in rec.points)  # type: ignore[attr-defined]
    steps = [c for c in rec.sensitivity.cells if c.axis == "step"]  # type: ignore[attr-defined]
    assert len(steps) == rec.reference_steps  # type: ignore[attr-defined]


def test_yaml_round_trips_through_gate_local_with_the_same_verdict(tmp_path: Path) -> None:
    from carrygate.app.cli import app

    folder = make_tiny_zoo_model(tmp_path / "tiny", steps=3, puzzles=24, seed=0)
    runner = CliRunner()
    out, front = tmp_path / "best.yaml", tmp_path / "front.json"
    rec = runner.invoke(app, ["recommend", str(folder), "--max-weight-fraction", "0.75", "--min-fidelity", "0.99", "--limit", "12",
                              "--search-puzzles", "12", "--out", str(out), "--json", str(front), "--plot", str(tmp_path / "front.svg")])
    assert rec.exit_code == 0, rec.output
    verdict = json.loads(front.read_text())["verdict"]
    assert CompressionSpec.from_yaml(out.read_text()).content_hash  # the file is a valid spec as written
    gated = runner.invoke(app, ["gate", "--local", "--checkpoint", str(folder), "--spec", str(out), "--limit", "12"])
    assert gated.exit_code == {"go": 0, "no_go": 1, "inconclusive": 2}[verdict], gated.output
    assert (tmp_path / "front.svg").read_text().startswith("<svg")


def test_dashboard_page_shows_front_heatmap_and_chosen(fragile_recommendation: tuple[object, object], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    import carrygate.app.dashboard.recommend as page
    from carrygate.app.main import create_app
    from carrygate.app.settings import Settings

    _, rec = fragile_recommendation
    (tmp_path / "recommend-tiny.json").write_text(rec.model_dump_json())  # type: ignore[attr-defined]
    monkeypatch.setattr(page, "REPO_RESULTS", tmp_path)
    with TestClient(create_app(Settings(data_dir=tmp_path / "data"), start_workers=False)) as client:
        html = client.get("/dashboard/recommendations/tiny")
        assert html.status_code == 200
        for marker in ('id="front"', "<svg", 'id="heatmap"', FRAGILE, 'id="chosen"', rec.chosen.name):  # type: ignore[attr-defined]
            assert marker in html.text, marker
        assert client.get("/dashboard/recommendations/nope").status_code == 404


def test_require_go_confirms_only_what_the_gate_passes() -> None:
    torch.manual_seed(0)
    model = _fragile_model()
    rec = recommend(model, _probe(12, model.config), Budget(max_weight_fraction=0.75), Tolerance(min_fidelity=0.99), search_puzzles=12,
                    batch_size=12, verdict_of=lambda result: "no_go", require_go=True)
    assert rec.chosen is None and rec.finalists
    assert all(f.verdict == "no_go" and "gate verdict no_go" in f.reason for f in rec.finalists)


def test_budget_and_tolerance_validate_and_bound_every_axis() -> None:
    from pydantic import ValidationError

    from carrygate.models.recommend.results import Cost
    from carrygate.models.recommend.search import within

    with pytest.raises(ValidationError):
        Budget()
    with pytest.raises(ValidationError):
        Tolerance(max_predicted_drop=0.02, min_fidelity=0.9)
    cost = Cost(weight_bytes=100, weight_fraction=0.2, sram_bytes=1000, gflop_per_puzzle=1.0, step_ms=2.0)
    assert within(cost, Budget(max_weight_fraction=0.25, max_weight_bytes=100, max_sram_bytes=1000, max_gflop_per_puzzle=1.0,
                               max_step_ms=2.0))
    for bound in ({"max_weight_fraction": 0.19}, {"max_weight_bytes": 99}, {"max_sram_bytes": 999}, {"max_gflop_per_puzzle": 0.9},
                  {"max_step_ms": 1.9}):
        assert not within(cost, Budget(**bound)), bound


def test_half_precision_and_ort_int8_are_searched(fragile_recommendation: tuple[object, object]) -> None:
    pytest.importorskip("onnxruntime")
    _, rec = fragile_recommendation
    by_stage: dict[str, list] = {}
    for p in rec.points:  # type: ignore[attr-defined]
        by_stage.setdefault(p.stage, []).append(p)
    halves = {p.spec.get("precision") for p in by_stage.get("precision", [])}
    assert halves == {"bf16", "fp16"}
    for p in by_stage["precision"]:
        base = next(q for q in rec.points if q.bits == p.bits and q.depth_steps == p.depth_steps and q.stage != "precision")  # type: ignore[attr-defined]
        assert p.cost.weight_bytes < base.cost.weight_bytes  # what it keeps in float is stored at half width
    (ort,) = by_stage["ort"]
    assert ort.spec["onnxruntime"]["quantization"] == "dynamic" and ort.damage.fidelity is not None
