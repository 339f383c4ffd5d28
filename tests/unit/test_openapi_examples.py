"""Every example shown in the OpenAPI document is a valid instance of its schema."""

from __future__ import annotations

import inspect

import pytest
from pydantic import BaseModel

import carrygate.app.schemas as schemas

MODELS = [m for _, m in inspect.getmembers(schemas, inspect.isclass)
          if issubclass(m, BaseModel) and m.__module__ == schemas.__name__
          and "examples" in (m.model_config.get("json_schema_extra") or {})]


def test_the_documented_responses_carry_examples() -> None:
    assert {m.__name__ for m in MODELS} >= {"JobCreate", "JobRead", "VerdictRead", "RuleRead", "CheckpointRead"}


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_examples_validate(model: type[BaseModel]) -> None:
    for example in model.model_config["json_schema_extra"]["examples"]:  # type: ignore[index]
        model.model_validate(example)
