"""Specs are data: validated with the field named, round-trip through YAML/JSON, hash stably."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from carrygate.models import build_model
from carrygate.models.compress import CompressionSpec, apply
from carrygate.models.compress.grids import PAPER
from tests.conftest import REPO, tiny_trm

EXAMPLES = sorted((REPO / "examples" / "specs").glob("*.yaml"))
REQUIRED = {"fp16", "bf16", "int8-bnb", "int8-channel", "int8-dynamic", "int4-naive", "int4-calibrated", "int4-group64", "nf4",
            "prune-25", "prune-50", "depth-h1", "carry-int8", "emb-svd16"}


def test_every_required_example_ships_and_parses() -> None:
    assert REQUIRED <= {p.stem for p in EXAMPLES}
    for path in EXAMPLES:
        spec = CompressionSpec.from_yaml(path.read_text())
        assert spec.name == path.stem


def test_paper_grid_entries_equal_their_example_files() -> None:
    for name, body in PAPER.items():
        from_file = CompressionSpec.from_yaml((REPO / "examples" / "specs" / f"{name}.yaml").read_text())
        assert from_file.content_hash == CompressionSpec.model_validate(body).content_hash, name


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_yaml_and_json_round_trip(path: Path) -> None:
    spec = CompressionSpec.from_yaml(path.read_text())
    assert CompressionSpec.from_yaml(spec.to_yaml()) == spec
    assert CompressionSpec.model_validate_json(spec.model_dump_json()) == spec


def test_content_hash_ignores_name_and_key_order_but_not_content() -> None:
    a = CompressionSpec.model_validate({"name": "a", "weights": {"method": "int4", "granularity": "per_channel"}, "exclude": ["lm_head"]})
    b = CompressionSpec.model_validate({"exclude": ["lm_head"], "weights": {"granularity": "per_channel", "method": "int4"}, "name": "b"})
    c = CompressionSpec.model_validate({"weights": {"method": "int4", "granularity": "per_tensor", "symmetric": True}})
    assert a.content_hash == b.content_hash != c.content_hash
    # pinned: a change of canonical form would silently split stored results by hash
    assert CompressionSpec().content_hash == CompressionSpec.model_validate({}).content_hash
    assert len(a.content_hash) == 64


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"weights": {"method": "int3"}}, "weights"),
        ({"weights": {"method": "int4", "granularity": "group"}}, "group_size"),
        ({"weights": {"method": "int4", "group_size": 64}}, "group_size"),
        ({"prune": {"sparsity": 1.5}}, "sparsity"),
        ({"depth": {}}, "depth"),
        ({"depth": {"H_cycles": 0}}, "H_cycles"),
        ({"precision": "int2"}, "precision"),
        ({"puzzle_embedding": {"method": "svd"}}, "rank"),
        ({"carry": {"bits": 1}}, "bits"),
        ({"weights": {"method": "int", "bits": 9}}, "bits"),
        ({"weigths": {"method": "int8-channel"}}, "weigths"),
        ({"weights": {"method": "nf4"}, "activations": {"bits": 8}}, "activations"),
        ({"include": []}, "include"),
    ],
)
def test_bad_specs_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        CompressionSpec.model_validate(body)
    assert field in str(err.value)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"puzzle_embedding": {"method": "svd", "rank": 64}}, "puzzle_embedding"),
        ({"prune": {"sparsity": 0.5, "structure": "heads"}, "include": ["*mlp_t*"]}, "prune"),
        ({"weights": {"method": "int8-channel"}, "include": ["nothing_here"]}, "include"),
        ({"depth": {"H_cycles": 2, "L_cycles": 0}}, "L_cycles"),
    ],
)
def test_specs_that_do_not_fit_the_model_are_rejected_with_the_field(body: dict[str, object], field: str) -> None:
    model = build_model(tiny_trm(hidden_size=16))
    with pytest.raises((ValueError, ValidationError)) as err:
        apply(CompressionSpec.model_validate(body), model)
    assert field in str(err.value)


def test_apply_never_mutates_the_reference() -> None:
    model = build_model(tiny_trm())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for name, body in PAPER.items():
        apply(CompressionSpec.model_validate({"name": name, **body}), model)
    after = model.state_dict()
    assert all(after[k].equal(v) for k, v in before.items())
    # compression state is the candidate's, never the reference's: no attributes, no hooks left behind
    assert not any(hasattr(model, attr) for attr in ("carry_codec", "emulated_half", "step_index"))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_spec_problems_from_config_alone_agree_with_apply() -> None:
    from carrygate.models.compress.fit import spec_problems

    config = tiny_trm(hidden_size=16)
    model = build_model(config)
    cases = [
        {"weights": {"method": "int4", "granularity": "group", "group_size": 32}},
        {"puzzle_embedding": {"method": "svd", "rank": 64}},
        {"weights": {"method": "int4", "granularity": "group", "group_size": 32}, "exclude": ["*"], "include": ["*"]},
        {"weights": {"method": "int8-channel"}},
    ]
    for body in cases:
        spec = CompressionSpec.model_validate(body)
        problems = spec_problems(spec, config)
        try:
            apply(spec, model)
            applied = True
        except ValueError:
            applied = False
        assert applied == (not problems), (body, problems)
    mlp = tiny_trm(mlp_t=True, pos_encodings="none")
    assert spec_problems(CompressionSpec.model_validate({"prune": {"sparsity": 0.5, "structure": "heads"}}), mlp)


def test_candidates_share_the_puzzle_table_until_a_spec_changes_it() -> None:
    model = build_model(tiny_trm())
    model.puzzle_emb.weights.normal_()
    table = model.puzzle_emb.weights.clone()
    for body in ({"weights": {"method": "int8-channel"}}, {"depth": {"H_cycles": 1}}, {"precision": "bf16"}, {"carry": {"bits": 8}},
                 {"puzzle_embedding": {"method": "flash_row"}}):
        candidate = apply(CompressionSpec.model_validate(body), model).model
        assert candidate.puzzle_emb.weights.data_ptr() == model.puzzle_emb.weights.data_ptr(), body
    for body in ({"puzzle_embedding": {"method": "int8"}}, {"puzzle_embedding": {"method": "svd", "rank": 2}}, {"precision": "fp16"}):
        candidate = apply(CompressionSpec.model_validate(body), model).model
        assert not candidate.puzzle_emb.weights.equal(table), body  # the candidate's table did change ...
    assert model.puzzle_emb.weights.equal(table)  # ... and the reference's did not


def test_every_part_of_a_spec_has_an_applier_in_the_documented_order() -> None:
    from carrygate.models.compress import APPLIERS, parts
    from carrygate.models.compress.spec import CarrySpec, OnnxRuntimeSpec, PruneSpec, PuzzleEmbeddingSpec

    spec = CompressionSpec.model_validate({"depth": {"H_cycles": 1}, "prune": {"sparsity": 0.25}, "noise": {"sigma": 0.1},
                                           "puzzle_embedding": {"method": "int8"}, "carry": {"bits": 8},
                                           "onnxruntime": {"quantization": "dynamic"}})
    kinds = [type(part) for part in parts(spec)]
    assert all(kind in APPLIERS for kind in kinds)
    assert kinds[1:3] == [PruneSpec, type(spec.noise)] and kinds[3] is PuzzleEmbeddingSpec
    assert kinds[-2:] == [CarrySpec, OnnxRuntimeSpec]
    for body in PAPER.values():
        assert all(type(part) in APPLIERS for part in parts(CompressionSpec.model_validate(body)))


def test_per_step_quantisers_are_told_the_step_by_the_candidate_not_the_model() -> None:
    model = build_model(tiny_trm(halt_max_steps=3))
    data = [(torch.randint(0, 5, (4, 9)), torch.zeros(4, dtype=torch.long))]
    candidate = apply(CompressionSpec.model_validate({"weights": {"method": "int8-channel"}, "activations": {}}), model, calibration=data)
    with torch.inference_mode():
        assert torch.isfinite(candidate(*data[0]).logits).all()
        with pytest.raises(RuntimeError, match="ACT step"):  # the bare model has no step to tell them
            candidate.model(*data[0])
