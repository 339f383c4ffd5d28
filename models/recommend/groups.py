"""Module groups a recommendation assigns precisions to: each layer's token mixer, channel MLP or
attention projections, and the heads — read from the model's own Linear layers, not hard-coded."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from carrygate.models.compress.scope import matches
from carrygate.models.reasoner import RecursiveReasoner

# What a Linear's parent module is, by its attribute name in models/layers.py (TRM and HRM blocks).
KINDS = {"mlp_t": "token_mixer", "mlp": "channel_mlp", "self_attn": "attention", "lm_head": "heads", "q_head": "heads"}


class ModuleGroup(BaseModel):
    """One unit of the search: a glob that selects its Linear layers, and what it costs in fp32."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="e.g. L_level.layers.0.mlp_t, or lm_head")
    kind: str = Field(description="token_mixer | channel_mlp | attention | heads")
    pattern: str = Field(description="glob over module names (models/compress/scope.py)")
    layers: list[str]
    params: int


def _unit_of(name: str) -> tuple[str, str] | None:
    """(unit name, kind) of a Linear: its enclosing mixer/MLP/attention module, or the head itself."""
    parts = name.split(".")
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in KINDS:
            return ".".join(parts[: i + 1]), KINDS[parts[i]]
    return None


def module_groups(model: RecursiveReasoner) -> list[ModuleGroup]:
    """Every unit in module order. A Linear outside any known unit raises: a silent gap would leave
    layers in float that the search believes quantised."""
    units: dict[str, tuple[str, list[str], int]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        unit = _unit_of(name)
        if unit is None:
            raise ValueError(f"recommend: Linear {name!r} belongs to no known module group ({sorted(KINDS)})")
        kind, layers, params = units.get(unit[0], (unit[1], [], 0))
        units[unit[0]] = (kind, [*layers, name], params + module.weight.numel())
    groups = []
    for unit, (kind, layers, params) in units.items():
        pattern = unit if "." not in unit else unit + ".*"
        if not all(matches(layer, [pattern]) for layer in layers):  # the glob must select exactly this unit
            raise ValueError(f"recommend: pattern {pattern!r} does not select {layers}")
        groups.append(ModuleGroup(name=unit, kind=kind, pattern=pattern, layers=layers, params=params))
    return groups


def kinds(groups: list[ModuleGroup]) -> dict[str, list[ModuleGroup]]:
    out: dict[str, list[ModuleGroup]] = {}
    for group in groups:
        out.setdefault(group.kind, []).append(group)
    return out


def layer_of(group: ModuleGroup) -> str | None:
    """`L_level.layers.0` for a block's unit; None for the heads."""
    head, sep, _ = group.name.rpartition(".")
    return head if sep and group.kind != "heads" else None
