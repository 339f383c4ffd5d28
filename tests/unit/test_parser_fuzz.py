"""Hypothesis fuzz of the two parsers that read user input: compression specs and gate policies.

Whatever the input, the parser returns a valid object or raises ValueError (pydantic's ValidationError
is one) with a message; a valid object survives its own serialisation unchanged.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carrygate.gate import GatePolicy
from carrygate.models.compress.spec import CompressionSpec

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

leaves = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats() | st.text(max_size=12) | \
    st.sampled_from(["int4", "int8-channel", "nf4", "group", "per_tensor", "bf16", "fp16", "z_H", 32, 64, 0.5, 1, -1])
json_values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
VALID_SPECS: list[dict[str, Any]] = [
    {"name": "int8", "weights": {"method": "int8-channel"}},
    {"weights": {"method": "int4", "granularity": "group", "group_size": 32}, "exclude": ["lm_head"]},
    {"precision": "bf16", "carry": {"bits": 8, "states": ["z_H"]}},
    {"prune": {"sparsity": 0.5, "structure": "heads"}, "depth": {"halt_max_steps": 4}},
    {"activations": {"bits": 8, "calibration_puzzles": 8}, "puzzle_embedding": {"method": "svd", "rank": 4}},
    {"onnxruntime": {"quantization": "int4", "block_size": 32}},
]


def _mutate(data: st.DataObject, value: Any, depth: int = 0) -> Any:
    """Replace, drop or keep each part of a valid document at random (near-valid inputs reach deep validators)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            choice = data.draw(st.sampled_from(["keep", "keep", "mutate", "drop", "replace"]))
            if choice == "drop":
                continue
            out[key] = item if choice == "keep" else data.draw(json_values) if choice == "replace" else _mutate(data, item, depth + 1)
        if data.draw(st.booleans()):
            out[data.draw(st.text(max_size=10))] = data.draw(json_values)
        return out
    return data.draw(json_values) if data.draw(st.booleans()) else value


def _parse_spec(document: Any) -> CompressionSpec | None:
    try:
        return CompressionSpec.model_validate(document)
    except ValueError as err:
        assert str(err)
        return None


@FUZZ
@given(st.data())
def test_spec_parser_accepts_or_names_the_problem(data: st.DataObject) -> None:
    spec = _parse_spec(_mutate(data, data.draw(st.sampled_from(VALID_SPECS))))
    if spec is not None:
        again = CompressionSpec.model_validate(spec.to_dict() | ({"name": spec.name} if spec.name else {}))
        assert again.content_hash == spec.content_hash
        assert CompressionSpec.from_yaml(spec.to_yaml()).content_hash == spec.content_hash


@FUZZ
@given(json_values)
def test_spec_parser_on_arbitrary_json(document: Any) -> None:
    _parse_spec(document)


@FUZZ
@given(st.text(max_size=200) | st.lists(st.sampled_from(["weights:", " method:", " int4", "\n", "- ", "{", "}", "[", ":", "&a", "*a",
                                                            "!!python/object:os.system", "'", '"', "\t", "precision: fp16"]),
                                         max_size=30).map("".join))
def test_yaml_parsers_raise_value_errors_only(text: str) -> None:
    for parse in (CompressionSpec.from_yaml, GatePolicy.from_yaml):
        try:
            parse(text)
        except ValueError as err:
            assert str(err)


POLICY_KEYS = list(GatePolicy.model_fields)


@FUZZ
@given(st.dictionaries(st.sampled_from(POLICY_KEYS) | st.text(max_size=8), json_values, max_size=6))
def test_policy_parser_accepts_or_names_the_problem(document: dict[str, Any]) -> None:
    try:
        policy = GatePolicy.model_validate(document)
    except ValueError as err:
        assert str(err)
        return
    assert GatePolicy.from_yaml(policy.to_yaml()) == policy
    assert GatePolicy.model_validate(yaml.safe_load(yaml.safe_dump(policy.model_dump(mode="json")))) == policy
